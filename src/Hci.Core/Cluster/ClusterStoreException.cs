namespace Hci.Core.Cluster;

/// <summary>The cluster store could not be reached, or refused a request; the message says which and what to do.</summary>
public sealed class ClusterStoreException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed and what to do.</param>
    /// <param name="innerException">The cause, if any.</param>
    public ClusterStoreException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
