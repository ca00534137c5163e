namespace Hci.Core.Reactors;

/// <summary>How a <see cref="Reactor"/> runs.</summary>
public sealed class ReactorOptions
{
    /// <summary>The thread's name (shown by debuggers, <c>top -H</c> and in logs). Default <c>hci-reactor</c>.</summary>
    public string Name { get; set; } = "hci-reactor";

    /// <summary>
    /// How long the reactor keeps looking for work after the last work before it sleeps (a guest or an initiator that
    /// just sent a batch is likely to send the next soon; QEMU's adaptive polling and SPDK do the same). Zero sleeps
    /// as soon as a turn finds nothing. Default 32 µs; at most 1 s.
    /// </summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    /// <summary>The clock of the reactor's timers. Default <see cref="TimeProvider.System"/>; a fake one steps a manual reactor's timers in tests.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Checks the options; the message says what to change.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name))
        {
            throw new ArgumentException("ReactorOptions.Name must not be empty (it names the reactor's thread).");
        }

        if (PollWindow < TimeSpan.Zero || PollWindow > TimeSpan.FromSeconds(1))
        {
            throw new ArgumentException($"ReactorOptions.PollWindow must be from 0 to 1 s (was {PollWindow}).");
        }

        if (TimeProvider == null)
        {
            throw new ArgumentException("ReactorOptions.TimeProvider must be set (use TimeProvider.System).");
        }
    }

    internal ReactorOptions Clone() => new() { Name = Name, PollWindow = PollWindow, TimeProvider = TimeProvider };
}

/// <summary>How a <see cref="ReactorGroup"/> runs.</summary>
public sealed class ReactorGroupOptions
{
    /// <summary>Reactor threads in the group. Default <c>min(processors, 16)</c> (Kestrel's I/O queue count); 1 to 1024.</summary>
    public int Count { get; set; } = Math.Min(Environment.ProcessorCount, 16);

    /// <summary>The threads' name prefix; each reactor is named prefix-index. Default <c>hci-reactor</c>.</summary>
    public string Name { get; set; } = "hci-reactor";

    /// <summary>See <see cref="ReactorOptions.PollWindow"/>. Default 32 µs.</summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(32);

    /// <summary>See <see cref="ReactorOptions.TimeProvider"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Checks the options; the message says what to change.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (Count < 1 || Count > 1024)
        {
            throw new ArgumentException($"ReactorGroupOptions.Count must be from 1 to 1024 (was {Count}).");
        }

        new ReactorOptions { Name = Name, PollWindow = PollWindow, TimeProvider = TimeProvider }.Validate();
    }
}
