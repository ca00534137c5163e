using Hci.Core.Native;
using Hci.Transport.Virtio;

namespace Hci.Transport.Vhost;

/// <summary>A ring ready to serve, as the session hands it to its device.</summary>
/// <param name="Index">The ring's index.</param>
/// <param name="Virtqueue">The ring, translated into guest memory, resuming where the front-end said.</param>
/// <param name="Kick">The kick eventfd, or null when the front-end polls (NOFD); owned by the session.</param>
/// <param name="Call">The call eventfd, or null; owned by the session.</param>
/// <param name="Inflight">The ring's part of the in-flight area, when one is shared.</param>
/// <param name="Resubmit">Heads a previous back-end left in flight, to serve again first; null when none.</param>
internal sealed record VringStart(int Index, SplitVirtqueue Virtqueue, FileDescriptorHandle? Kick, FileDescriptorHandle? Call, InflightRegion? Inflight, ushort[]? Resubmit);
