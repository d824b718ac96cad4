using System.Collections.Immutable;
using System.Diagnostics;
using System.Numerics;

namespace Kmem.PageLayer;

/// <summary>
/// The buddy allocator over the arenas (mm/page_alloc.c's zone, for Kmem): blocks of
/// 2^order pages, split on allocation and coalesced with their buddy on free, so that
/// memory comes from a few large mappings and never one mapping per block. A block of
/// order k is aligned to 2^k pages. Allocations of a page count that is not a power of
/// two take the block of the next order and give the tail back at once
/// (alloc_pages_exact), so a 20 KiB allocation holds 5 pages, not 8.
/// </summary>
/// <remarks>
/// <para>Lock: <c>page_zone</c>, a leaf. It guards every arena's free lists, head orders,
/// free times and dirty bits. Under it nothing is taken and no system call is made: an
/// arena is mapped before the lock is taken to add it, and a purge takes its blocks off
/// the free lists, madvises them with the lock dropped, and frees them back.</para>
/// <para>Arenas: the first is 64 MiB, each new one twice the last, up to 1 GiB
/// (<see cref="MaxArenaOrder"/>), so a heap of H bytes takes about log2(H / 64 MiB) + H / 1 GiB
/// mappings. A request above half the largest arena is a dedicated mapping (Pages).</para>
/// </remarks>
internal static unsafe class Zone
{
    public const int FirstArenaOrder = 14;   // 64 MiB of 4 KiB pages
    public const int MaxArenaOrder = 18;     // 1 GiB
    private const int PurgeBatch = 4096;     // blocks unlinked per scan of a purge

    private static readonly Locking.LeafSpinLock s_lock = new("page_zone");
    /// <summary>Copy-on-write under page_zone; read without it to find an address's arena.</summary>
    private static ImmutableArray<Arena> s_arenas = [];
    private static int s_nextArenaOrder = FirstArenaOrder;
    private static long s_freePages;       // under page_zone
    private static long s_freeDirtyPages;  // under page_zone
    private static long s_purgedPages;

    /// <summary>Arenas mapped so far (each one mapping).</summary>
    public static int ArenaCount => s_arenas.Length;

    /// <summary>Bytes of address space the arenas reserve.</summary>
    public static long ReservedBytes
    {
        get
        {
            long sum = 0;
            foreach (Arena a in s_arenas)
                sum += (long)a.Bytes;
            return sum;
        }
    }

    /// <summary>Free pages that may still be resident (freed and not purged yet), in bytes.</summary>
    public static long FreeDirtyBytes => Volatile.Read(ref s_freeDirtyPages) * OsMemory.PageSize;

    /// <summary>Pages given back to the OS by purges so far, in bytes.</summary>
    public static long PurgedBytes => Volatile.Read(ref s_purgedPages) * OsMemory.PageSize;

    /// <summary>The order of the smallest block of at least <paramref name="pages"/> pages.</summary>
    public static int OrderFor(nuint pages) => BitOperations.Log2(BitOperations.RoundUpToPowerOf2(pages));

    /// <summary>The arena that holds <paramref name="address"/>, or null (a dedicated mapping).</summary>
    public static Arena? Find(nuint address)
    {
        foreach (Arena a in s_arenas)
        {
            if (a.Contains(address))
                return a;
        }
        return null;
    }

    /// <summary>
    /// <paramref name="pages"/> pages aligned to 2^<paramref name="alignOrder"/> pages, or
    /// null: <paramref name="refusal"/> is Limit when the charge for its clean pages would
    /// pass Pages.Limit, None when no arena has room (the caller grows the zone and retries).
    /// <paramref name="zeroed"/>: every page is clean (fresh or purged), so reads as zero.
    /// </summary>
    public static void* TryAlloc(int pages, int alignOrder, out Pages.Refusal refusal, out bool zeroed)
    {
        int order = Math.Max(OrderFor((nuint)pages), alignOrder);
        Debug.Assert(order <= MaxArenaOrder, "dedicated sizes do not reach the zone");
        refusal = Pages.Refusal.None;
        zeroed = false;
        using (s_lock.Scope())
        {
            foreach (Arena a in s_arenas)
            {
                uint fits = a.NonEmpty & ~((1u << order) - 1);
                if (fits == 0)
                    continue;
                int have = BitOperations.TrailingZeroCount(fits);
                int page = a.FreeList[have];
                a.Unlink(page, have);
                int freedAt = a.FreedAtMs[page];
                // Split: the upper halves go back on the lists, keeping the block's free time.
                while (have > order)
                {
                    have--;
                    a.Push(page + (1 << have), have, freedAt);
                }
                // The tail past the request goes back at once (alloc_pages_exact).
                FreeRangeLocked(a, page + pages, (1 << order) - pages, freedAt, coalesce: false);
                int dirty = a.CountDirty(page, pages);
                int clean = pages - dirty;
                if (!Pages.TryCharge((nuint)clean * OsMemory.PageSize))
                {
                    FreeRangeLocked(a, page, pages, freedAt, coalesce: true);
                    refusal = Pages.Refusal.Limit;
                    return null;
                }
                a.SetDirty(page, pages, true);
                s_freePages -= pages;
                s_freeDirtyPages -= dirty;
                // A purged page reads as zero after MADV_DONTNEED, not after MADV_FREE.
                zeroed = dirty == 0 && !OsMemory.PurgeWithFree;
                return (void*)(a.Base + (nuint)page * OsMemory.PageSize);
            }
        }
        return null;
    }

    /// <summary>Gives <paramref name="pages"/> pages at <paramref name="block"/> (in arena <paramref name="a"/>) back, coalescing.</summary>
    public static void Free(Arena a, void* block, int pages) => Free(a, block, pages, Environment.TickCount);

    /// <summary>As <see cref="Free(Arena, void*, int)"/>, for a block freed at <paramref name="freedAtMs"/> (a pcp list's drain).</summary>
    public static void Free(Arena a, void* block, int pages, int freedAtMs)
    {
        nuint offset = (nuint)block - a.Base;
        Debug.Assert(offset % OsMemory.PageSize == 0 && offset / OsMemory.PageSize + (nuint)pages <= (nuint)a.PageCount, "freeing a range outside its arena");
        int page = (int)(offset / OsMemory.PageSize);
        using (s_lock.Scope())
        {
            Debug.Assert(a.HeadOrder[page] == Arena.NotHead && a.CountDirty(page, pages) == pages, "freeing pages that were not handed out (a double free?)");
            FreeRangeLocked(a, page, pages, freedAtMs, coalesce: true);
            s_freePages += pages;
            s_freeDirtyPages += pages;
        }
    }

    /// <summary>
    /// Extends the block of <paramref name="oldPages"/> pages at <paramref name="block"/> in
    /// place to <paramref name="newPages"/>, if every page after it up to there is free
    /// (realloc growing into a free neighbour, as jemalloc's extents do); the pages are
    /// charged as an allocation's are. False, with nothing changed, otherwise.
    /// </summary>
    public static bool TryExtend(Arena a, void* block, int oldPages, int newPages)
    {
        long first = (long)(((nuint)block - a.Base) / OsMemory.PageSize);
        // In long: first + newPages can pass int.MaxValue (a realloc to terabytes).
        if (first + newPages > a.PageCount || newPages <= oldPages)
            return false;
        int start = (int)first + oldPages;
        int end = (int)first + newPages;
        using (s_lock.Scope())
        {
            // First pass: every page of [start, end) lies in a free block.
            for (int page = start; page < end;)
            {
                int head = FreeHeadContaining(a, page, out int order);
                if (head < 0)
                    return false;
                page = head + (1 << order);
            }
            int count = end - start;
            int dirty = a.CountDirty(start, count);
            if (!Pages.TryCharge((nuint)(count - dirty) * OsMemory.PageSize))
                return false;
            // Second pass: take those blocks and give back what lies outside the range.
            for (int page = start; page < end;)
            {
                int head = FreeHeadContaining(a, page, out int order);
                int freedAt = a.FreedAtMs[head];
                a.Unlink(head, order);
                int blockEnd = head + (1 << order);
                if (head < start)
                    FreeRangeLocked(a, head, start - head, freedAt, coalesce: true);
                if (blockEnd > end)
                    FreeRangeLocked(a, end, blockEnd - end, freedAt, coalesce: true);
                page = blockEnd;
            }
            a.SetDirty(start, count, true);
            s_freePages -= count;
            s_freeDirtyPages -= dirty;
        }
        return true;
    }

    /// <summary>The head of the free block holding <paramref name="page"/> (and its order), or -1 if the page is not free. Caller holds page_zone.</summary>
    private static int FreeHeadContaining(Arena a, int page, out int order)
    {
        for (order = 0; order <= a.MaxOrder; order++)
        {
            int head = page & ~((1 << order) - 1);
            if (a.HeadOrder[head] == order)
                return head;
        }
        order = -1;
        return -1;
    }

    /// <summary>
    /// Frees [page, page + count) as the largest aligned power-of-two blocks that tile it,
    /// each merged with its free buddy while it has one. Caller holds page_zone. The
    /// free-page counts are the caller's business (a split tail was never counted out).
    /// </summary>
    private static void FreeRangeLocked(Arena a, int page, int count, int freedAtMs, bool coalesce)
    {
        while (count > 0)
        {
            int order = Math.Min(page == 0 ? a.MaxOrder : BitOperations.TrailingZeroCount(page), BitOperations.Log2((uint)count));
            int size = 1 << order;
            FreeBlockLocked(a, page, order, freedAtMs, coalesce);
            page += size;
            count -= size;
        }
    }

    private static void FreeBlockLocked(Arena a, int page, int order, int freedAtMs, bool coalesce)
    {
        while (coalesce && order < a.MaxOrder)
        {
            int buddy = page ^ (1 << order);
            if (a.HeadOrder[buddy] != order)
                break;
            a.Unlink(buddy, order);
            // The merged block is as young as its youngest part: purge waits for all of it.
            int buddyFreed = a.FreedAtMs[buddy];
            if (unchecked(buddyFreed - freedAtMs) > 0)
                freedAtMs = buddyFreed;
            page &= ~(1 << order);
            order++;
        }
        a.Push(page, order, freedAtMs);
    }

    /// <summary>
    /// Maps a new arena big enough for a block of 2^<paramref name="order"/> pages (a
    /// system call, with no lock held) and adds it. False when the OS refuses.
    /// </summary>
    public static bool Grow(int order)
    {
        int arenaOrder = Math.Max(Volatile.Read(ref s_nextArenaOrder), order);
        Debug.Assert(arenaOrder <= MaxArenaOrder);
        nuint bytes = (nuint)1 << (arenaOrder + 12);
        void* mem = OsMemory.Reserve(bytes);
        while (mem == null && arenaOrder > order)
        {
            // Short of address space (or a refused mapping): try a smaller arena.
            arenaOrder--;
            bytes >>= 1;
            mem = OsMemory.Reserve(bytes);
        }
        if (mem == null)
            return false;
        Arena arena;
        try
        {
            arena = new Arena((nuint)mem, arenaOrder);
        }
        catch (OutOfMemoryException)
        {
            // No memory for the metadata: the arena goes back, and the allocation fails cleanly.
            OsMemory.Unmap(mem, bytes);
            return false;
        }
        using (s_lock.Scope())
        {
            arena.Push(0, arenaOrder, Environment.TickCount);
            s_arenas = s_arenas.Add(arena);
            s_freePages += arena.PageCount;
            s_nextArenaOrder = Math.Min(MaxArenaOrder, Math.Max(s_nextArenaOrder, arenaOrder + 1));
        }
        return true;
    }

    /// <summary>
    /// Gives the free dirty pages of blocks freed at least <paramref name="minAge"/> ago back
    /// to the OS (madvise), keeping the address space. Returns the bytes given back.
    /// </summary>
    public static long Purge(TimeSpan minAge)
    {
        int now = Environment.TickCount;
        long ageMs = (long)minAge.TotalMilliseconds;
        long purged = 0;
        var batch = new List<(Arena A, int Page, int Order, int FreedAt, int Dirty)>();
        var given = new List<bool>();
        while (true)
        {
            // One scan collects up to a batch; only a full batch scans again (the purged
            // blocks go back at the heads of the lists, so a rescan per small batch would
            // walk them over and over under the spinlock).
            batch.Clear();
            using (s_lock.Scope())
            {
                foreach (Arena a in s_arenas)
                {
                    for (int order = 0; order <= a.MaxOrder && batch.Count < PurgeBatch; order++)
                    {
                        for (int page = a.FreeList[order]; page != -1 && batch.Count < PurgeBatch;)
                        {
                            int next = a.Next[page];
                            int dirty;
                            if ((long)unchecked(now - a.FreedAtMs[page]) >= ageMs && (dirty = a.CountDirty(page, 1 << order)) != 0)
                            {
                                batch.Add((a, page, order, a.FreedAtMs[page], dirty));
                                a.Unlink(page, order);   // ours while the lock is dropped
                            }
                            page = next;
                        }
                    }
                }
            }
            if (batch.Count == 0)
                return purged;
            given.Clear();
            foreach (var (a, page, order, _, _) in batch)
            {
                bool ok = OsMemory.Purge((void*)(a.Base + (nuint)page * OsMemory.PageSize), (nuint)(1 << order) * OsMemory.PageSize);
                given.Add(ok);
            }
            long pages = 0;
            using (s_lock.Scope())
            {
                for (int i = 0; i < batch.Count; i++)
                {
                    var (a, page, order, freedAt, dirty) = batch[i];
                    // A refused madvise (mlocked pages, no madvise off Linux) leaves the pages
                    // resident and their bytes as they were: still dirty, still charged.
                    if (given[i])
                    {
                        a.SetDirty(page, 1 << order, false);
                        s_freeDirtyPages -= dirty;
                        pages += dirty;
                    }
                    FreeBlockLocked(a, page, order, freedAt, coalesce: true);
                }
                // Under the lock, so BytesHeld and the dirty bits agree whenever it is free.
                Pages.Uncharge((nuint)pages * OsMemory.PageSize);
            }
            Interlocked.Add(ref s_purgedPages, pages);
            purged += pages * OsMemory.PageSize;
            if (batch.Count < PurgeBatch || pages == 0)
                return purged;
        }
    }

    /// <summary>Debug and tests: every invariant of every arena, and the dirty-page total (Σ dirty pages × PageSize).</summary>
    public static long CheckInvariants()
    {
        long dirtyBytes = 0;
        using (s_lock.Scope())
        {
            long free = 0, freeDirty = 0;
            foreach (Arena a in s_arenas)
            {
                dirtyBytes += (long)a.CountDirty(0, a.PageCount) * OsMemory.PageSize;
                for (int order = 0; order <= a.MaxOrder; order++)
                {
                    Check(((a.NonEmpty >> order) & 1) == (a.FreeList[order] != -1 ? 1u : 0u), "NonEmpty disagrees with a free list");
                    for (int page = a.FreeList[order]; page != -1; page = a.Next[page])
                    {
                        Check(a.HeadOrder[page] == order, "a listed block's head order is wrong");
                        Check(page % (1 << order) == 0, "a free block is misaligned for its order");
                        if (order < a.MaxOrder)
                            Check(a.HeadOrder[page ^ (1 << order)] != order, "two free buddies were not coalesced");
                        free += 1 << order;
                        freeDirty += a.CountDirty(page, 1 << order);
                    }
                }
            }
            Check(free == s_freePages, $"free pages {free} but counted {s_freePages}");
            Check(freeDirty == s_freeDirtyPages, $"free dirty pages {freeDirty} but counted {s_freeDirtyPages}");
        }
        return dirtyBytes;
    }

    private static void Check(bool ok, string what)
    {
        if (!ok)
            throw new InvalidOperationException("page zone: " + what);
    }
}
