using System.Net;

namespace Hci.Transport.Iscsi;

/// <summary>Settings of an <see cref="IscsiTarget"/>.</summary>
public sealed class IscsiTargetOptions
{
    /// <summary>Where to listen: "HOST:PORT", "[IPv6]:PORT" or "PORT" (all addresses). Default 0.0.0.0:3260.</summary>
    public string Portal { get; set; } = "0.0.0.0:3260";

    /// <summary>The target's iSCSI name (an iqn. or eui. name).</summary>
    public string TargetName { get; set; } = "";

    /// <summary>CHAP user the initiator must log in as; null allows AuthMethod=None.</summary>
    public string? ChapUser { get; set; }

    /// <summary>CHAP secret for <see cref="ChapUser"/>: at least 12 bytes (96 bits, RFC 7143 12.1.3).</summary>
    public string? ChapSecret { get; set; }

    /// <summary>User this target answers mutual CHAP with; null refuses mutual CHAP.</summary>
    public string? MutualChapUser { get; set; }

    /// <summary>Secret for mutual CHAP: at least 12 bytes, and not the same as <see cref="ChapSecret"/>.</summary>
    public string? MutualChapSecret { get; set; }

    /// <summary>
    /// How long a connection waits before it answers a failed authentication (other connections are not held up).
    /// Default 1 s; at most 10 s.
    /// </summary>
    public TimeSpan FailedLoginDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Initiator names (iSCSI names, compared without regard to case) allowed to open normal sessions; empty allows
    /// any. A login from another initiator is refused as not authorized.
    /// </summary>
    public IList<string> AllowedInitiators { get; set; } = new List<string>();

    /// <summary>Largest data segment this target receives.</summary>
    public int MaxRecvDataSegmentLength { get; set; } = 256 * 1024;

    /// <summary>Largest solicited burst.</summary>
    public int MaxBurstLength { get; set; } = 1024 * 1024;

    /// <summary>Largest unsolicited burst.</summary>
    public int FirstBurstLength { get; set; } = 256 * 1024;

    /// <summary>Commands an initiator may have outstanding (the CmdSN window).</summary>
    public int CommandWindow { get; set; } = 128;

    /// <summary>
    /// Reactor threads the sessions' full feature phases share; 0 for min(processors, 16). Each session is placed on
    /// the least loaded.
    /// </summary>
    /// <remarks>Default 0.</remarks>
    public int Reactors { get; set; }

    /// <summary>Logged-in sessions (normal and discovery) at once; a login past it is refused as out of resources.</summary>
    /// <remarks>Default 1024: sessions share the target's reactors, so one costs memory (its buffers), not a thread.</remarks>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>
    /// Connections still logging in at once, counted apart from <see cref="MaxConnections"/>: when a new one arrives
    /// with this many pending, the oldest pending is dropped. Default 256.
    /// </summary>
    public int MaxPendingLogins { get; set; } = 256;

    /// <summary>
    /// How long a connection may take to log in before it is dropped, and how long a discovery session may stay
    /// silent. Default 15 s; from 1 s to 10 minutes.
    /// </summary>
    public TimeSpan LoginTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Data buffer bytes all connections together may hold (commands waiting for data or running, and pooled spares);
    /// a command that would need more is answered TASK SET FULL. Each connection also holds at most 256 MiB.
    /// Default 1 GiB; at least 32 MiB (one command's largest buffer, so that any command can run alone).
    /// </summary>
    public long MaxBufferedBytes { get; set; } = 1L << 30;

    /// <summary>
    /// How long a connection's data-path thread keeps looking at its socket and queues after work before it
    /// sleeps (0 to 1 ms): an initiator that just sent commands is likely to send more soon. Zero sleeps at once.
    /// </summary>
    public TimeSpan PollWindow { get; set; } = TimeSpan.FromMicroseconds(100);

    /// <summary>
    /// After this long without a PDU from the initiator the target pings it with a NOP-In; zero never pings.
    /// </summary>
    public TimeSpan NopInInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How long a ping may go unanswered before the connection is dropped.</summary>
    public TimeSpan NopInTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The shortest CHAP secret accepted, in bytes (RFC 7143 12.1.3: 96 bits).</summary>
    public const int MinChapSecretBytes = 12;

    /// <summary>Checks the settings and returns the endpoint to listen on.</summary>
    /// <returns>The endpoint.</returns>
    /// <exception cref="ArgumentException">A setting is invalid; the message says what to fix.</exception>
    public IPEndPoint Validate()
    {
        if (!(TargetName.StartsWith("iqn.", StringComparison.Ordinal) || TargetName.StartsWith("eui.", StringComparison.Ordinal) || TargetName.StartsWith("naa.", StringComparison.Ordinal)) || TargetName.Length > 223)
        {
            throw new ArgumentException($"IscsiTargetOptions.TargetName '{TargetName}' is not an iSCSI name: use iqn.YYYY-MM.reversed.domain:name (at most 223 bytes).");
        }

        if ((ChapUser == null) != (ChapSecret == null) || ChapSecret?.Length == 0)
        {
            throw new ArgumentException("IscsiTargetOptions: give both ChapUser and ChapSecret (non-empty), or neither.");
        }

        if ((MutualChapUser == null) != (MutualChapSecret == null) || (MutualChapUser != null && ChapUser == null))
        {
            throw new ArgumentException("IscsiTargetOptions: mutual CHAP needs MutualChapUser and MutualChapSecret, and CHAP itself.");
        }

        if (ChapSecret != null && System.Text.Encoding.UTF8.GetByteCount(ChapSecret) < MinChapSecretBytes)
        {
            throw new ArgumentException($"IscsiTargetOptions.ChapSecret is {System.Text.Encoding.UTF8.GetByteCount(ChapSecret)} bytes: a CHAP secret must be at least {MinChapSecretBytes} bytes (96 random bits, RFC 7143 12.1.3).");
        }

        if (MutualChapSecret != null && System.Text.Encoding.UTF8.GetByteCount(MutualChapSecret) < MinChapSecretBytes)
        {
            throw new ArgumentException($"IscsiTargetOptions.MutualChapSecret is {System.Text.Encoding.UTF8.GetByteCount(MutualChapSecret)} bytes: a CHAP secret must be at least {MinChapSecretBytes} bytes (96 random bits, RFC 7143 12.1.3).");
        }

        if (MutualChapSecret != null && MutualChapSecret == ChapSecret)
        {
            throw new ArgumentException("IscsiTargetOptions: MutualChapSecret must differ from ChapSecret (the same secret both ways lets a captured exchange be reflected, RFC 7143 12.1.3).");
        }

        if (AllowedInitiators == null || AllowedInitiators.Any(string.IsNullOrWhiteSpace))
        {
            throw new ArgumentException("IscsiTargetOptions.AllowedInitiators must be a list (empty: any initiator) of initiator names, none empty.");
        }

        if (FailedLoginDelay < TimeSpan.Zero || FailedLoginDelay > TimeSpan.FromSeconds(10))
        {
            throw new ArgumentException($"IscsiTargetOptions.FailedLoginDelay {FailedLoginDelay} must be from 0 to 10 s.");
        }

        if (MaxRecvDataSegmentLength is < 512 or > 16777215 || MaxBurstLength is < 512 or > 16777215 || FirstBurstLength < 512 || FirstBurstLength > MaxBurstLength)
        {
            throw new ArgumentException("IscsiTargetOptions: segment and burst lengths must be from 512 to 16777215, with FirstBurstLength at most MaxBurstLength.");
        }

        if (Reactors is < 0 or > 1024)
        {
            throw new ArgumentException($"IscsiTargetOptions.Reactors must be from 0 (one per processor, up to 16) to 1024 (was {Reactors}).");
        }

        if (CommandWindow is < 1 or > 1024 || MaxConnections < 1)
        {
            throw new ArgumentException("IscsiTargetOptions: CommandWindow must be from 1 to 1024 and MaxConnections at least 1.");
        }

        if (MaxPendingLogins < 1 || LoginTimeout < TimeSpan.FromSeconds(1) || LoginTimeout > TimeSpan.FromMinutes(10))
        {
            throw new ArgumentException($"IscsiTargetOptions: MaxPendingLogins ({MaxPendingLogins}) must be at least 1 and LoginTimeout ({LoginTimeout}) from 1 s to 10 minutes.");
        }

        if (MaxBufferedBytes < (32L << 20))
        {
            throw new ArgumentException($"IscsiTargetOptions.MaxBufferedBytes {MaxBufferedBytes} must be at least 32 MiB (33554432), the largest buffer one command takes: it bounds the data buffers of all connections together.");
        }

        if (PollWindow < TimeSpan.Zero || PollWindow > TimeSpan.FromMilliseconds(1))
        {
            throw new ArgumentException($"IscsiTargetOptions.PollWindow {PollWindow} must be from 0 to 1 ms.");
        }

        if (NopInInterval < TimeSpan.Zero || NopInTimeout <= TimeSpan.Zero || NopInInterval > TimeSpan.FromDays(1) || NopInTimeout > TimeSpan.FromDays(1))
        {
            throw new ArgumentException("IscsiTargetOptions: NopInInterval must be zero (no pings) or positive, and NopInTimeout positive, each at most a day.");
        }

        return ParsePortal(Portal);
    }

    /// <summary>Parses "HOST:PORT", "[IPv6]:PORT" or "PORT".</summary>
    /// <param name="portal">The text.</param>
    /// <returns>The endpoint.</returns>
    /// <exception cref="ArgumentException">It is not one of those forms.</exception>
    public static IPEndPoint ParsePortal(string portal)
    {
        if (int.TryParse(portal, out int only) && only is > 0 and < 65536)
        {
            return new IPEndPoint(IPAddress.Any, only);
        }

        if (IPEndPoint.TryParse(portal, out var endpoint) && (endpoint.Port != 0 || portal.EndsWith(":0", StringComparison.Ordinal)))
        {
            return endpoint; // port 0: the system picks one (LocalEndPoint says which)
        }

        int colon = portal.LastIndexOf(':');
        if (colon > 0 && int.TryParse(portal[(colon + 1)..], out int port) && port is > 0 and < 65536)
        {
            try
            {
                var addresses = Dns.GetHostAddresses(portal[..colon]);
                if (addresses.Length > 0)
                {
                    return new IPEndPoint(addresses[0], port);
                }
            }
            catch (System.Net.Sockets.SocketException)
            {
            }
        }

        throw new ArgumentException($"Portal '{portal}' is not HOST:PORT, [IPv6]:PORT or PORT.");
    }
}
