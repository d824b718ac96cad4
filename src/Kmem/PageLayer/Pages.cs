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

    /// <summary>Bytes of freed blocks kept mapped for reuse (part of <see cref="BytesHeld"/>).</summary>
    public static long CachedBytes => BlockCache.Bytes;

    /// <summary>
    /// Returns every cached free block to the OS. <see cref="SlabCache.Shrink"/> and
    /// <see cref="SlabCache.Dispose"/> call it; so does an allocation that meets the limit.
    /// </summary>
    public static void Trim()
    {
        foreach (var (block, size) in BlockCache.TakeAll())
            Unmap((void*)block, size);
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

    /// <summary>The public reason for a refused block.</summary>
    internal static AllocationFailure ToFailure(Refusal refusal) => refusal switch
    {
        Refusal.Limit => AllocationFailure.PageLimit,
        Refusal.Injected => AllocationFailure.InjectedFault,
        _ => AllocationFailure.OutOfMemory,
    };

    /// <summary>
    /// A block of <paramref name="size"/> bytes aligned to <paramref name="align"/>, or
    /// null with the reason. <paramref name="zeroed"/> tells whether it is a fresh
    /// (all-zero) mapping or a reused one. Accounting is one atomic add; only reuse of a
    /// cached block takes the page_cache leaf lock.
    /// </summary>
    internal static void* AllocBlock(nuint size, nuint align, out Refusal refusal, out bool zeroed)
    {
        zeroed = false;
        Debug.Assert(size % OsMemory.PageSize == 0 && (align & (align - 1)) == 0, "bad block geometry");
        if (t_failCountdown > 0 && --t_failCountdown == 0)
        {
            refusal = Refusal.Injected;
            Interlocked.Increment(ref s_failures);
            return null;
        }

        // Power-of-two blocks from 64 KiB up are mapped naturally aligned, whatever was
        // asked, so that a cached one can serve any later request of its size.
        if (nuint.IsPow2(size) && size >= PageMap.GranuleSize)
            align = size;
        if (BlockCache.IsCacheable(size))
        {
            void* cached = BlockCache.TryTake(size);
            if (cached != null)
            {
                Debug.Assert(((nuint)cached & (align - 1)) == 0, "cached block misaligned for the request");
                Interlocked.Increment(ref s_blockAllocations);
                refusal = Refusal.None;
                return cached;
            }
        }

        // Cached free blocks count against the limit: at the limit, give them back first.
        if (!TryCharge(size, out long held))
        {
            bool charged = false;
            if (BlockCache.Bytes > 0)
            {
                Trim();
                charged = TryCharge(size, out held);
            }
            if (!charged)
            {
                refusal = Refusal.Limit;
                Interlocked.Increment(ref s_failures);
                return null;
            }
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
        zeroed = true;
        long peak;
        while (held > (peak = Volatile.Read(ref s_peakBytesHeld)) &&
               Interlocked.CompareExchange(ref s_peakBytesHeld, held, peak) != peak)
        {
        }
        refusal = Refusal.None;
        return block;
    }

    /// <summary>Adds <paramref name="size"/> to the bytes held unless that passes the limit.</summary>
    private static bool TryCharge(nuint size, out long held)
    {
        held = Interlocked.Add(ref s_bytesHeld, (long)size);
        long limit = Volatile.Read(ref s_limit);
        if (limit == 0 || held <= limit)
            return true;
        Interlocked.Add(ref s_bytesHeld, -(long)size);
        return false;
    }

    internal static void FreeBlock(void* block, nuint size)
    {
        if (BlockCache.IsCacheable(size) && BlockCache.TryPut(block, size))
            return;
        Unmap(block, size);
    }

    private static void Unmap(void* block, nuint size)
    {
        OsMemory.Unmap(block, size);
        long held = Interlocked.Add(ref s_bytesHeld, -(long)size);
        Debug.Assert(held >= 0, "page accounting went negative");
    }
}
