using Hci.Core.Blocks;

namespace Hci.Core.Modules;

/// <summary>
/// Base of devices that wrap another device to change what its requests see (fault injection, delay):
/// same geometry and capabilities, one inner queue per outer queue.
/// </summary>
public abstract class BlockDeviceDecorator : BlockDevice
{
    private readonly bool _ownsInner;

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The device that carries the I/O.</param>
    /// <param name="ownsInner">Dispose the inner device with this one.</param>
    protected BlockDeviceDecorator(BlockDevice inner, bool ownsInner)
        : base((inner ?? throw new ArgumentNullException(nameof(inner))).Name, inner.Geometry, inner.Capabilities)
    {
        Inner = inner;
        _ownsInner = ownsInner;
    }

    /// <summary>The wrapped device.</summary>
    public BlockDevice Inner { get; }

    /// <inheritdoc/>
    public override string Engine => Inner.Engine;

    /// <inheritdoc/>
    protected override void DisposeCore()
    {
        if (_ownsInner)
        {
            Inner.Dispose();
        }
    }
}
