namespace Hci.Core.Cluster;

/// <summary><see cref="ClusterCatalog"/> refused a request; <see cref="Error"/> says why, the message says what to do.</summary>
public sealed class ClusterCatalogException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="error">Why the request was refused.</param>
    /// <param name="message">What is wrong and what to do.</param>
    /// <param name="innerException">The cause, if any.</param>
    public ClusterCatalogException(CatalogError error, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Error = error;
    }

    /// <summary>Why the request was refused.</summary>
    public CatalogError Error { get; }
}
