using System.Diagnostics;

using Kmem.PageLayer;

namespace Kmem;

/// <summary>
/// The page layer (the buddy allocator's role): naturally aligned blocks from the OS,
/// the bytes held right now, an optional limit, and fault injection for tests.
/// </summary>
public static unsafe class Pages
{
    private static long s_bytesHeld;
    private static long s_peakBytesHeld;
    private static long s_limit;
    private static long s_blockAllocations;
    private static long s_failures;

    [ThreadStatic] private static int t_failCountdown;

    /// <summary>Bytes of slab and large blocks held from the OS right now.</summary>
    public static long BytesHeld => Volatile.Read(ref s_bytesHeld);

    /// <summary>The highest <see cref="BytesHeld"/> seen since start or <see cref="ResetPeak"/>.</summary>
    public static long PeakBytesHeld => Volatile.Read(ref s_peakBytesHeld);

    /// <summary>Blocks mapped since start (slabs and large allocations).</summary>
    public static long BlockAllocations => Volatile.Read(ref s_blockAllocations);

    /// <summary>Block allocations refused (limit, injected fault or the OS).</summary>
    public static long FailedAllocations => Volatile.Read(ref s_failures);

    /// <summary>
    /// Upper bound on <see cref="BytesHeld"/>, 0 for none. A block that would pass it is
    /// refused: the allocation that needed it fails cleanly (TryAlloc false, Alloc throws
    /// <see cref="SlabAllocationException"/>) and nothing already held is touched.
    /// </summary>
    public static long Limit
    {
        get => Volatile.Read(ref s_limit);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            Volatile.Write(ref s_limit, value);
        }
    }

    /// <summary>Restarts <see cref="PeakBytesHeld"/> from the bytes held now.</summary>
    public static void ResetPeak() => Volatile.Write(ref s_peakBytesHeld, BytesHeld);

    /// <summary>
    /// Fault injection: the <paramref name="nth"/> block allocation made by the calling
    /// thread from now on fails (1 = the next one). Scoped to the thread so that a test
    /// cannot fail allocations of tests running beside it. Dispose the result to disarm.
    /// </summary>
    public static FaultScope FailNthAllocation(int nth)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nth, 1);
        t_failCountdown = nth;
        return default;
    }

    /// <summary>Disarms <see cref="FailNthAllocation"/> when disposed.</summary>
    public readonly struct FaultScope : IDisposable
    {
        public void Dispose() => t_failCountdown = 0;
    }

    internal enum Refusal { None, Limit, Injected, Os }

    /// <summary>
    /// A block of <paramref name="size"/> bytes aligned to <paramref name="align"/>, or
    /// null with the reason. Takes no lock: accounting is one atomic add.
    /// </summary>
    internal static void* AllocBlock(nuint size, nuint align, out Refusal refusal)
    {
        Debug.Assert(size % OsMemory.PageSize == 0 && (align & (align - 1)) == 0, "bad block geometry");
        if (t_failCountdown > 0 && --t_failCountdown == 0)
        {
            refusal = Refusal.Injected;
            Interlocked.Increment(ref s_failures);
            return null;
        }

        long held = Interlocked.Add(ref s_bytesHeld, (long)size);
        long limit = Volatile.Read(ref s_limit);
        if (limit != 0 && held > limit)
        {
            Interlocked.Add(ref s_bytesHeld, -(long)size);
            refusal = Refusal.Limit;
            Interlocked.Increment(ref s_failures);
            return null;
        }

        void* block = OsMemory.Map(size, align);
        if (block == null)
        {
            Interlocked.Add(ref s_bytesHeld, -(long)size);
            refusal = Refusal.Os;
            Interlocked.Increment(ref s_failures);
            return null;
        }

        Interlocked.Increment(ref s_blockAllocations);
        long peak;
        while (held > (peak = Volatile.Read(ref s_peakBytesHeld)) &&
               Interlocked.CompareExchange(ref s_peakBytesHeld, held, peak) != peak)
        {
        }
        refusal = Refusal.None;
        return block;
    }

    internal static void FreeBlock(void* block, nuint size)
    {
        OsMemory.Unmap(block, size);
        long held = Interlocked.Add(ref s_bytesHeld, -(long)size);
        Debug.Assert(held >= 0, "page accounting went negative");
    }
}
