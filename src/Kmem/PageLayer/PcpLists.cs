using System.Diagnostics;
using System.Numerics;

namespace Kmem.PageLayer;

/// <summary>
/// Per-CPU lists of free blocks for the hot orders (mm/page_alloc.c's per_cpu_pages): a
/// freed block of 2^k pages, k in [<see cref="MinOrder"/>, <see cref="MaxOrder"/>] (the
/// slab sizes, 64 KiB .. 2 MiB), waits on the freeing CPU's list, and the next block of
/// that order allocated on that CPU is taken from there without the zone lock, its split
/// or its coalescing.
/// </summary>
/// <remarks>
/// <para>Lock: one <c>page_pcp</c> leaf spinlock per CPU unit. The CPU's own allocations
/// and frees only <em>try</em> it (as the kernel's pcp_spin_trylock): a thread preempted
/// or migrated while holding it costs the others a trip to the zone, never a wait. Drains
/// (<see cref="Drain"/>) take it for real. Nothing is taken under it: a drain moves the
/// blocks to a local buffer under the lock and frees them to the zone after.</para>
/// <para>State of a block on a list: handed out as far as the zone knows (its dirty bits
/// set, not on a free list, not in the zone's free counts), in <see cref="Pages.BytesHeld"/>
/// (it is resident), in <see cref="Bytes"/>, not in <see cref="Pages.BytesInUse"/>. So
/// BytesHeld == dirty pages + dedicated bytes holds as before.</para>
/// <para>Bound: at most <see cref="BytesPerOrder"/> per order per CPU, and one block of
/// the orders above that, so a CPU holds at most 7 MiB here (five orders of 1 MiB, one 2 MiB block). The reclaim thread
/// gives blocks back to the zone once they are older than Pages.PurgeDelay (and the zone
/// then purges them), <see cref="Pages.Trim"/> at once, and an allocation about to map a
/// new arena drains them first (the kernel's drain_all_pages before it fails).</para>
/// <para>Only frees fill the lists, never a batch refill from the zone: a refilled
/// block would be charged to BytesHeld while never touched, so BytesHeld would
/// overstate what is resident.</para>
/// </remarks>
internal static unsafe class PcpLists
{
    public const int MinOrder = 4;       // 64 KiB: the smallest slab
    public const int MaxOrder = 9;       // 2 MiB: the largest slab
    public const int BytesPerOrder = 1 << 20;

    private const int Orders = MaxOrder - MinOrder + 1;

    /// <summary>Blocks one CPU's list of order k holds at most.</summary>
    private static int High(int order) => Math.Max(1, BytesPerOrder >> (order + 12));

    /// <summary>One CPU unit's lists; every field under <see cref="Lock"/>.</summary>
    private sealed class Unit
    {
        public readonly Locking.LeafSpinLock Lock = new("page_pcp");
        public readonly nint[][] Blocks = new nint[Orders][];
        public readonly int[][] FreedAtMs = new int[Orders][];
        public readonly int[] Count = new int[Orders];
        /// <summary>Bytes on this unit's lists; written under Lock, read without it by the sums.</summary>
        public long Bytes;
        /// <summary>Allocations this unit served; written under Lock.</summary>
        public long Hits;

        public Unit()
        {
            for (int i = 0; i < Orders; i++)
            {
                Blocks[i] = new nint[High(i + MinOrder)];
                FreedAtMs[i] = new int[High(i + MinOrder)];
            }
        }
    }

    /// <summary>Created on a CPU's first free, with a CAS; never removed.</summary>
    private static readonly Unit?[] s_units = new Unit?[CpuTopology.PossibleCpus];
    /// <summary>
    /// Bytes of blocks on every CPU's lists now (part of Pages.CachedBytes): a sum of the
    /// units' counts, so the hot paths write only their own unit's line, under its lock.
    /// Exact when nothing runs beside it.
    /// </summary>
    public static long Bytes
    {
        get
        {
            long sum = 0;
            foreach (Unit? unit in s_units)
                sum += unit == null ? 0 : Volatile.Read(ref unit.Bytes);
            return sum;
        }
    }

    /// <summary>Allocations served from a list since start (a sum over the units, as <see cref="Bytes"/>).</summary>
    public static long Hits
    {
        get
        {
            long sum = 0;
            foreach (Unit? unit in s_units)
                sum += unit == null ? 0 : Volatile.Read(ref unit.Hits);
            return sum;
        }
    }

    /// <summary>True for a request the lists serve: exactly 2^k pages, k in [MinOrder, MaxOrder].</summary>
    public static bool Takes(nuint pages) => BitOperations.IsPow2(pages) && pages >= (1u << MinOrder) && pages <= (1u << MaxOrder);

    /// <summary>
    /// True for a freed block the lists take: <see cref="Takes"/> its page count, and aligned to
    /// its size as a buddy block of that order is (a block grown in place by realloc may not be).
    /// </summary>
    public static bool TakesBlock(void* block, nuint pages) => Takes(pages) && ((nuint)block & (pages * OsMemory.PageSize - 1)) == 0;

    /// <summary>
    /// A block of 2^<paramref name="order"/> pages from this CPU's list, or null (empty, or
    /// the list busy). The block is aligned to its size, as every block of that order is.
    /// </summary>
    public static void* TryAlloc(int order)
    {
        Unit? unit = s_units[CpuTopology.CurrentCpu];
        if (unit == null || !unit.Lock.TryEnter())
            return null;
        int i = order - MinOrder;
        nint block = 0;
        if (unit.Count[i] > 0)
        {
            block = unit.Blocks[i][--unit.Count[i]];   // the most recently freed: likeliest in cache
            Volatile.Write(ref unit.Bytes, unit.Bytes - ((long)OsMemory.PageSize << order));
            Volatile.Write(ref unit.Hits, unit.Hits + 1);
        }
        unit.Lock.Exit();
        return (void*)block;
    }

    /// <summary>Puts a freed block on this CPU's list; false (the caller frees it to the zone) when the list is full or busy.</summary>
    public static bool TryFree(void* block, int order)
    {
        Debug.Assert(((nuint)block & (((nuint)OsMemory.PageSize << order) - 1)) == 0, "a pcp block is aligned to its size");
        int cpu = CpuTopology.CurrentCpu;
        Unit unit = s_units[cpu] ?? CreateUnit(cpu);
        if (!unit.Lock.TryEnter())
            return false;
        int i = order - MinOrder;
        bool taken = unit.Count[i] < unit.Blocks[i].Length;
        if (taken)
        {
            unit.FreedAtMs[i][unit.Count[i]] = Environment.TickCount;
            unit.Blocks[i][unit.Count[i]++] = (nint)block;
            Volatile.Write(ref unit.Bytes, unit.Bytes + ((long)OsMemory.PageSize << order));
        }
        unit.Lock.Exit();
        return taken;
    }

    /// <summary>Tests: whether <paramref name="block"/> is on some CPU's list now (takes each page_pcp in turn).</summary>
    internal static bool Holds(void* block)
    {
        foreach (Unit? unit in s_units)
        {
            if (unit == null)
                continue;
            using (unit.Lock.Scope())
            {
                for (int i = 0; i < Orders; i++)
                {
                    if (Array.IndexOf(unit.Blocks[i], (nint)block, 0, unit.Count[i]) >= 0)
                        return true;
                }
            }
        }
        return false;
    }

    private static Unit CreateUnit(int cpu)
    {
        var fresh = new Unit();
        return Interlocked.CompareExchange(ref s_units[cpu], fresh, null) ?? fresh;
    }

    /// <summary>
    /// Gives every block freed at least <paramref name="minAgeMs"/> ago, on every CPU, back
    /// to the zone with its free time (so the zone's decay counts from the real free).
    /// Returns the bytes given back. Takes each page_pcp in turn, then page_zone, never both.
    /// </summary>
    public static long Drain(long minAgeMs)
    {
        if (Bytes == 0)
            return 0;
        int now = Environment.TickCount;
        long drained = 0;
        var taken = new List<(nint Block, int Order, int FreedAt)>();
        foreach (Unit? unit in s_units)
        {
            if (unit == null)
                continue;
            taken.Clear();
            using (unit.Lock.Scope())
            {
                for (int i = 0; i < Orders; i++)
                {
                    // Keep the young ones, in order: oldest at the bottom of each stack.
                    int kept = 0;
                    for (int j = 0; j < unit.Count[i]; j++)
                    {
                        if ((long)unchecked(now - unit.FreedAtMs[i][j]) >= minAgeMs)
                        {
                            taken.Add((unit.Blocks[i][j], i + MinOrder, unit.FreedAtMs[i][j]));
                            Volatile.Write(ref unit.Bytes, unit.Bytes - ((long)OsMemory.PageSize << (i + MinOrder)));
                            continue;
                        }
                        unit.Blocks[i][kept] = unit.Blocks[i][j];
                        unit.FreedAtMs[i][kept++] = unit.FreedAtMs[i][j];
                    }
                    unit.Count[i] = kept;
                }
            }
            foreach (var (block, order, freedAt) in taken)
            {
                long bytes = (long)OsMemory.PageSize << order;
                Arena? arena = Zone.Find((nuint)block);
                Debug.Assert(arena != null, "a pcp block outside every arena");
                Zone.Free(arena, (void*)block, 1 << order, freedAt);
                drained += bytes;
            }
        }
        return drained;
    }
}
