using System.Diagnostics;
using System.Numerics;

using Kmem.PageLayer;

namespace Kmem;

/// <summary>
/// The page layer (the buddy allocator's role): page-granular blocks from a few large
/// arenas (<see cref="Zone"/>), freed pages given back to the OS after
/// <see cref="PurgeDelay"/> or at once on <see cref="Trim"/>, the bytes held right now, an
/// optional limit, and fault injection for tests.
/// </summary>
/// <remarks>
/// Invariant: <see cref="BytesHeld"/> == Σ dirty pages of every arena × PageSize + the
/// bytes of dedicated mappings (requests above half the largest arena): the bytes the
/// OS has given us and we have not given back, whether handed out or free and not purged.
/// </remarks>
public static unsafe class Pages
{
    private static long s_bytesHeld;
    private static long s_bytesInUse;
    private static long s_dedicatedBytes;
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

    /// <summary>Bytes of freed pages not given back to the OS yet (part of <see cref="BytesHeld"/>): on the zone's free lists or the per-CPU lists; reused first.</summary>
    public static long CachedBytes => Zone.FreeDirtyBytes + PcpLists.Bytes;

    /// <summary>Block allocations served from a per-CPU list of free blocks, without the zone lock.</summary>
    public static long PerCpuListHits => PcpLists.Hits;

    /// <summary>Bytes of blocks handed out now (slabs, large allocations, per-CPU chunks).</summary>
    public static long BytesInUse => Volatile.Read(ref s_bytesInUse);

    /// <summary>Address space reserved: every arena plus every dedicated mapping.</summary>
    public static long BytesReserved => Zone.ReservedBytes + Volatile.Read(ref s_dedicatedBytes);

    /// <summary>Arenas mapped (one mapping each).</summary>
    public static int Arenas => Zone.ArenaCount;

    /// <summary>Bytes given back to the OS by purges since start.</summary>
    public static long PurgedBytes => Zone.PurgedBytes;

    /// <summary>
    /// How long freed pages stay resident for reuse before the reclaim thread gives them
    /// back (the decay of jemalloc's dirty pages, mimalloc's purge delay). Default 1 s.
    /// </summary>
    public static TimeSpan PurgeDelay
    {
        get => s_purgeDelay;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, TimeSpan.Zero);
            s_purgeDelay = value;
        }
    }

    private static TimeSpan s_purgeDelay = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Gives every free page back to the OS now (madvise; the address space stays mapped).
    /// <see cref="SlabCache.Shrink"/> and <see cref="SlabCache.Dispose"/> call it, and so
    /// do memory pressure and an allocation that meets the limit.
    /// </summary>
    public static void Trim()
    {
        PcpLists.Drain(0);
        Zone.Purge(TimeSpan.Zero);
    }

    /// <summary>The reclaim thread's decay: free pages older than <see cref="PurgeDelay"/> go back.</summary>
    internal static void PurgeExpired()
    {
        TimeSpan delay = PurgeDelay;
        PcpLists.Drain((long)delay.TotalMilliseconds);
        Zone.Purge(delay);
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
        /// <summary>Disarms the calling thread's injected fault if it has not fired yet (dispose it on the thread that armed it).</summary>
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
    /// A block of <paramref name="size"/> bytes (a multiple of the page size) aligned to
    /// <paramref name="align"/> (a power of two), or null with the reason.
    /// <paramref name="zeroed"/> tells whether every page reads as zero (fresh or purged).
    /// No system call unless the zone must grow by an arena; one leaf lock at a time
    /// (this CPU's page_pcp, tried only, for a block of a hot order; else page_zone).
    /// </summary>
    internal static void* AllocBlock(nuint size, nuint align, out Refusal refusal, out bool zeroed)
    {
        zeroed = false;
        Debug.Assert(size != 0 && size % OsMemory.PageSize == 0 && (align & (align - 1)) == 0, "bad block geometry");
        if (t_failCountdown > 0 && --t_failCountdown == 0)
        {
            refusal = Refusal.Injected;
            Interlocked.Increment(ref s_failures);
            return null;
        }
        nuint pages = size / OsMemory.PageSize;
        int alignOrder = align <= OsMemory.PageSize ? 0 : BitOperations.Log2(align) - 12;
        int order = Math.Max(Zone.OrderFor(pages), alignOrder);
        if (PcpLists.Takes(pages) && order == BitOperations.Log2(pages) && PcpLists.TryAlloc(order) is var cached && cached != null)
        {
            // Already dirty and charged: no limit to check, nothing zeroed.
            refusal = Refusal.None;
            Interlocked.Increment(ref s_blockAllocations);
            Interlocked.Add(ref s_bytesInUse, (long)size);
            return cached;
        }
        void* block = order < Zone.MaxArenaOrder
            ? AllocFromZone((int)pages, alignOrder, order, out refusal, out zeroed)
            : AllocDedicated(size, align, out refusal, out zeroed);
        if (block == null)
        {
            Interlocked.Increment(ref s_failures);
            return null;
        }
        Interlocked.Increment(ref s_blockAllocations);
        Interlocked.Add(ref s_bytesInUse, (long)size);
        return block;
    }

    private static void* AllocFromZone(int pages, int alignOrder, int order, out Refusal refusal, out bool zeroed)
    {
        bool trimmed = false, drained = false;
        while (true)
        {
            void* block = Zone.TryAlloc(pages, alignOrder, out refusal, out zeroed);
            if (block != null)
                return block;
            if (refusal == Refusal.Limit)
            {
                // Free pages not given back count against the limit: give them back first.
                if (trimmed || CachedBytes == 0)
                    return null;
                Trim();
                trimmed = true;
                continue;
            }
            // Blocks waiting on per-CPU lists first, before a new arena (drain_all_pages).
            if (!drained && PcpLists.Bytes != 0)
            {
                PcpLists.Drain(0);
                drained = true;
                continue;
            }
            if (!Zone.Grow(order))
            {
                refusal = Refusal.Os;
                return null;
            }
        }
    }

    /// <summary>A request too big for an arena: its own mapping, charged whole.</summary>
    private static void* AllocDedicated(nuint size, nuint align, out Refusal refusal, out bool zeroed)
    {
        zeroed = false;
        if (!TryCharge(size))
        {
            bool charged = false;
            if (CachedBytes > 0)
            {
                Trim();
                charged = TryCharge(size);
            }
            if (!charged)
            {
                refusal = Refusal.Limit;
                return null;
            }
        }
        void* block = OsMemory.Map(size, Math.Max(align, OsMemory.PageSize));
        if (block == null)
        {
            Uncharge(size);
            refusal = Refusal.Os;
            return null;
        }
        Interlocked.Add(ref s_dedicatedBytes, (long)size);
        zeroed = true;
        refusal = Refusal.None;
        return block;
    }

    /// <summary>Adds <paramref name="size"/> to the bytes held unless that passes the limit. Takes no lock (called under page_zone).</summary>
    internal static bool TryCharge(nuint size)
    {
        if (size == 0)
            return true;
        long held = Interlocked.Add(ref s_bytesHeld, (long)size);
        long limit = Volatile.Read(ref s_limit);
        if (limit != 0 && held > limit)
        {
            Interlocked.Add(ref s_bytesHeld, -(long)size);
            return false;
        }
        long peak;
        while (held > (peak = Volatile.Read(ref s_peakBytesHeld)) &&
               Interlocked.CompareExchange(ref s_peakBytesHeld, held, peak) != peak)
        {
        }
        return true;
    }

    /// <summary>Bytes given back to the OS.</summary>
    internal static void Uncharge(nuint size)
    {
        long held = Interlocked.Add(ref s_bytesHeld, -(long)size);
        Debug.Assert(held >= 0, "page accounting went negative");
    }

    internal static void FreeBlock(void* block, nuint size)
    {
        Debug.Assert(size != 0 && size % OsMemory.PageSize == 0, "bad block size");
        Interlocked.Add(ref s_bytesInUse, -(long)size);
        Arena? arena = Zone.Find((nuint)block);
        if (arena != null)
        {
            nuint pages = size / OsMemory.PageSize;
            if (!PcpLists.TakesBlock(block, pages) || !PcpLists.TryFree(block, BitOperations.Log2(pages)))
                Zone.Free(arena, block, (int)pages);
            return;
        }
        OsMemory.Unmap(block, size);
        Interlocked.Add(ref s_dedicatedBytes, -(long)size);
        Uncharge(size);
    }

    /// <summary>
    /// Grows the block at <paramref name="block"/> from <paramref name="size"/> to
    /// <paramref name="newSize"/> bytes in place (both page multiples) if the pages after it
    /// are free; false, with nothing changed, otherwise (a dedicated mapping never grows).
    /// </summary>
    internal static bool TryGrowBlock(void* block, nuint size, nuint newSize)
    {
        Debug.Assert(newSize > size && size % OsMemory.PageSize == 0 && newSize % OsMemory.PageSize == 0, "bad growth");
        Arena? arena = Zone.Find((nuint)block);
        if (arena == null || newSize / OsMemory.PageSize > (nuint)arena.PageCount
            || !Zone.TryExtend(arena, block, (int)(size / OsMemory.PageSize), (int)(newSize / OsMemory.PageSize)))
            return false;
        Interlocked.Add(ref s_bytesInUse, (long)(newSize - size));
        return true;
    }

    /// <summary>Tests: checks the zone's invariants and <see cref="BytesHeld"/> against the dirty pages; throws if one fails.</summary>
    internal static void CheckAccounting()
    {
        long dirty = Zone.CheckInvariants();
        long held = BytesHeld, dedicated = Volatile.Read(ref s_dedicatedBytes);
        if (held != dirty + dedicated)
            throw new InvalidOperationException($"page layer: BytesHeld {held} but dirty pages {dirty} + dedicated {dedicated}");
    }
}
