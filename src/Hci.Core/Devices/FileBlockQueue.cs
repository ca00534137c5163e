using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Hci.Core.Blocks;
using Tmds.Linux;

namespace Hci.Core.Devices;

/// <summary>
/// Runs a queue's requests with blocking positional I/O on worker threads of its own and hands the results back
/// to the owner thread at its next poll. Portable, and slower than io_uring: a fallback.
/// </summary>
internal sealed unsafe class FileBlockQueue : BlockQueue
{
    private readonly FileBlockDevice _device;
    private readonly ConcurrentQueue<BlockRequest> _work = new();
    private readonly ConcurrentQueue<BlockRequest> _done = new();
    private readonly SemaphoreSlim _workSignal = new(0);
    private readonly SemaphoreSlim _doneSignal = new(0);
    private readonly Thread[] _workers;
    private volatile bool _stopping;

    public FileBlockQueue(FileBlockDevice device, int workers)
        : base(device)
    {
        _device = device;
        _workers = new Thread[workers];
        using (ExecutionContext.SuppressFlow())
        {
            for (int i = 0; i < workers; i++)
            {
                _workers[i] = new Thread(WorkerLoop) { IsBackground = true, Name = "hci-file-io" };
                _workers[i].Start();
            }
        }
    }

    public override void Wake() => _doneSignal.Release();

    protected override void SubmitCore(BlockRequest request)
    {
        _work.Enqueue(request);
        _workSignal.Release();
    }

    protected override int PollCore(int minCompletions, int timeoutMilliseconds)
    {
        int done = 0;
        var deadline = timeoutMilliseconds < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMilliseconds;
        while (true)
        {
            while (_done.TryDequeue(out var request))
            {
                Complete(request, request.PendingResult);
                done++;
            }

            if (done >= minCompletions || timeoutMilliseconds == 0)
            {
                return done;
            }

            long left = deadline == long.MaxValue ? Timeout.Infinite : Math.Max(0, deadline - Environment.TickCount64);
            if (!_doneSignal.Wait((int)Math.Min(left, int.MaxValue)) || _done.IsEmpty)
            {
                // Timed out, or woken without a completion.
                while (_done.TryDequeue(out var request))
                {
                    Complete(request, request.PendingResult);
                    done++;
                }

                return done;
            }
        }
    }

    protected override void Dispose(bool disposing)
    {
        _stopping = true;
        _workSignal.Release(_workers.Length);
        foreach (var worker in _workers)
        {
            worker.Join();
        }

        _workSignal.Dispose();
        _doneSignal.Dispose();
        base.Dispose(disposing);
    }

    private void WorkerLoop()
    {
        try
        {
            while (true)
            {
                _workSignal.Wait();
                if (_stopping)
                {
                    return;
                }

                if (!_work.TryDequeue(out var request))
                {
                    continue;
                }

                request.PendingResult = Execute(request);
                _done.Enqueue(request);
                _doneSignal.Release();
            }
        }
        catch (Exception ex)
        {
            Environment.FailFast("Hci file I/O worker failed: " + ex);
        }
    }

    private int Execute(BlockRequest request)
    {
        var handle = _device.File.Handle;
        try
        {
            long offset = request.Offset;
            switch (request.Operation)
            {
                case BlockOperation.Read:
                    foreach (var s in request.Segments)
                    {
                        int n = RandomAccess.Read(handle, new Span<byte>((void*)s.Address, (int)s.Length), offset);
                        if (n != s.Length)
                        {
                            return -Errno.EIO;
                        }

                        offset += s.Length;
                    }

                    return (int)request.Length;
                case BlockOperation.Write:
                    foreach (var s in request.Segments)
                    {
                        RandomAccess.Write(handle, new ReadOnlySpan<byte>((void*)s.Address, (int)s.Length), offset);
                        offset += s.Length;
                    }

                    return (int)request.Length;
                case BlockOperation.Flush:
                    return Sync(handle);
                case BlockOperation.WriteZeroes:
                    return WriteZeroes(handle, request.Offset, request.Length);
                default:
                    return -Errno.EOPNOTSUPP;
            }
        }
        catch (IOException ex)
        {
            return -(ex.HResult is > 0 and < 4096 ? ex.HResult : Errno.EIO);
        }
        catch (UnauthorizedAccessException)
        {
            return -Errno.EPERM;
        }
    }

    private static int Sync(Microsoft.Win32.SafeHandles.SafeFileHandle handle)
    {
        int rc = LibC.fdatasync((int)handle.DangerousGetHandle());
        return rc == 0 ? 0 : -LibC.errno;
    }

    private int WriteZeroes(Microsoft.Win32.SafeHandles.SafeFileHandle handle, long offset, long length)
    {
        const int chunk = 1 << 20;
        int alignment = Math.Max(_device.Geometry.BufferAlignment, 4096);
        byte* zeroes = (byte*)NativeMemory.AlignedAlloc(chunk, (nuint)alignment);
        try
        {
            NativeMemory.Clear(zeroes, chunk);
            while (length > 0)
            {
                int n = (int)Math.Min(chunk, length);
                RandomAccess.Write(handle, new ReadOnlySpan<byte>(zeroes, n), offset);
                offset += n;
                length -= n;
            }

            return 0;
        }
        finally
        {
            NativeMemory.AlignedFree(zeroes);
        }
    }
}
