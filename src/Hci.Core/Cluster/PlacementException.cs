namespace Hci.Core.Cluster;

/// <summary>Placement cannot place the requested replicas over the cluster map; the message says why and what to do.</summary>
public sealed class PlacementException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong and what to do.</param>
    public PlacementException(string message)
        : base(message)
    {
    }
}
