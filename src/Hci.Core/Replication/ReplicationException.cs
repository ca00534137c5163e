namespace Hci.Core.Replication;

/// <summary>A replicated volume cannot be served as asked; the message says why and what to do.</summary>
public sealed class ReplicationException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed and what to do.</param>
    /// <param name="innerException">The cause, if any.</param>
    public ReplicationException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
