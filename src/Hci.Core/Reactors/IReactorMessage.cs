namespace Hci.Core.Reactors;

/// <summary>
/// Work posted to a <see cref="Reactor"/> from another thread with <see cref="Reactor.Post(IReactorMessage)"/>
/// (SPDK's <c>spdk_thread_send_msg</c>). A message object may be reused once it has run, so that posting
/// allocates nothing.
/// </summary>
public interface IReactorMessage
{
    /// <summary>Runs on the reactor's thread. An exception that escapes it ends the process.</summary>
    void Run();

    /// <summary>Called instead of <see cref="Run"/> when the reactor stopped before the message could run.</summary>
    void Abandon()
    {
    }
}
