using Hci.Core.Blocks;
using Hci.Core.Reactors;
using Hci.Core.Storage;
using Microsoft.Extensions.Logging;

namespace Hci.Core.Replication;

/// <summary>
/// This node's replica stores (one per local device, in the node's device order) and the connector the replication
/// logic opens channels with: in process (<c>LocalReplicaChannel</c>, no network) for this node's id, through the
/// remote connector (the node-to-node protocol's client) for every other node.
/// </summary>
public sealed class ReplicaNode : IReplicaConnector, IDisposable
{
    private readonly IReplicaConnector? _remote;
    private readonly ReplicaStore[] _stores;
    private readonly bool _ownsStores;
    private bool _disposed;

    /// <summary>Creates the node over stores that are already open.</summary>
    /// <param name="nodeId">This node's id, as in the cluster map.</param>
    /// <param name="stores">The stores, by device index (<see cref="ReplicaRequest.Device"/>).</param>
    /// <param name="remote">Opens channels to other nodes; null for a node that reaches no other (then asking for
    /// one throws).</param>
    /// <param name="ownsStores">Dispose the stores with the node.</param>
    public ReplicaNode(string nodeId, IReadOnlyList<ReplicaStore> stores, IReplicaConnector? remote = null, bool ownsStores = true)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nodeId);
        ArgumentNullException.ThrowIfNull(stores);
        NodeId = nodeId;
        _stores = [.. stores];
        foreach (var s in _stores)
        {
            ArgumentNullException.ThrowIfNull(s, nameof(stores));
        }

        _remote = remote;
        _ownsStores = ownsStores;
    }

    /// <summary>This node's id.</summary>
    public string NodeId { get; }

    /// <summary>The node's stores, by device index.</summary>
    public IReadOnlyList<ReplicaStore> Stores => _stores;

    /// <summary>Opens (or, when blank, formats) a store on each device and makes the node.</summary>
    /// <param name="nodeId">This node's id.</param>
    /// <param name="devices">The node's devices, in device-index order (not owned: dispose them after the node).</param>
    /// <param name="options">The layout for devices that get formatted; defaults if null.</param>
    /// <param name="remote">The connector to other nodes, or null.</param>
    /// <param name="logger">For the stores' events; none if null.</param>
    /// <param name="cancellationToken">Checked between devices.</param>
    /// <returns>The node, owning its stores.</returns>
    /// <exception cref="InvalidDataException">A device holds something other than a store, or a damaged one.</exception>
    public static async Task<ReplicaNode> OpenAsync(string nodeId, IReadOnlyList<BlockDevice> devices, ReplicaStoreOptions? options = null, IReplicaConnector? remote = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nodeId);
        ArgumentNullException.ThrowIfNull(devices);
        var stores = new List<ReplicaStore>(devices.Count);
        try
        {
            foreach (var device in devices)
            {
                stores.Add(await ReplicaStore.OpenOrFormatAsync(device, options, logger, cancellationToken).ConfigureAwait(false));
            }
        }
        catch
        {
            foreach (var s in stores)
            {
                s.Dispose();
            }

            throw;
        }

        return new ReplicaNode(nodeId, stores, remote, ownsStores: true);
    }

    /// <summary>Opens a channel to <paramref name="nodeId"/>: in process for this node, else through the remote
    /// connector.</summary>
    /// <param name="nodeId">The node.</param>
    /// <param name="reactor">The reactor whose thread owns the channel (call from that thread), or null for a thread
    /// that polls the channel itself.</param>
    /// <returns>The channel.</returns>
    /// <exception cref="InvalidOperationException">Another node was asked for and this node has no remote connector.</exception>
    public ReplicaChannel Open(string nodeId, Reactor? reactor)
    {
        ArgumentNullException.ThrowIfNull(nodeId);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (nodeId == NodeId)
        {
            return new LocalReplicaChannel(NodeId, _stores, reactor);
        }

        if (_remote == null)
        {
            throw new InvalidOperationException($"Node '{NodeId}' was asked for a channel to node '{nodeId}' but has no connector to other nodes; give ReplicaNode the node-to-node protocol's client as its remote connector.");
        }

        return _remote.Open(nodeId, reactor);
    }

    /// <summary>Closes the stores (when owned). Close every channel first.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_ownsStores)
        {
            foreach (var s in _stores)
            {
                s.Dispose();
            }
        }
    }
}
