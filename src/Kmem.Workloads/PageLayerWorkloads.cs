using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Kmem.Workloads;

/// <summary>One allocator's malloc, free and realloc, specialised by the JIT per struct.</summary>
public unsafe interface IMallocOps
{
    void* Alloc(nuint size);

    void Free(void* p);

    void* Realloc(void* p, nuint size);
}

/// <summary>Kmalloc, called directly.</summary>
public readonly unsafe struct KmallocOps : IMallocOps
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void* Alloc(nuint size) => Kmalloc.Alloc(size);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Free(void* p) => Kmalloc.Free(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void* Realloc(void* p, nuint size) => Kmalloc.Realloc(p, size);
}

/// <summary>A C peer through its function pointers.</summary>
public readonly unsafe struct PeerOps(NativePeer peer) : IMallocOps
{
    private readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> _malloc = peer.Malloc;
    private readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> _free = peer.Free;
    private readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, nuint, void*> _realloc = peer.Realloc;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void* Alloc(nuint size) => _malloc(size);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Free(void* p) => _free(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void* Realloc(void* p, nuint size) => _realloc(p, size);
}

/// <summary>
/// The page-layer issue's workloads, the same operation sequence for every allocator (a
/// fixed seed), timed in alternating rounds by the caller.
/// </summary>
public static unsafe class PageLayerWorkloads
{
    public const int Live = 256;
    private const int Ops = 1 << 14;
    private static long s_operations;

    /// <summary>Free+alloc pairs and reallocs run so far, over every allocator.</summary>
    public static long Operations => Interlocked.Read(ref s_operations);

    /// <summary>The sequence: slot to replace and new size, sizes uniform in [min, max].</summary>
    public static (int[] Slots, nuint[] Sizes) Sequence(int seed, nuint min, nuint max, int live = Live)
    {
        var random = new Random(seed);
        var slots = new int[Ops];
        var sizes = new nuint[Ops];
        for (int i = 0; i < Ops; i++)
        {
            slots[i] = random.Next(live);
            sizes[i] = min + (nuint)random.NextInt64((long)(max - min + 1));
        }
        return (slots, sizes);
    }

    /// <summary>
    /// ns per free+alloc: <see cref="Live"/> blocks live, each step frees a random one and
    /// allocates a random size in its place; <paramref name="touch"/> writes every page of
    /// the new block (as a user of it would), so page faults and purges count.
    /// </summary>
    public static double RandomReplace<T>(T ops, (int[] Slots, nuint[] Sizes) seq, bool touch, TimeSpan duration) where T : struct, IMallocOps
    {
        var live = new nint[seq.Slots.Max() + 1];
        for (int i = 0; i < live.Length; i++)
            live[i] = (nint)ops.Alloc(seq.Sizes[i]);
        double ns = NsPerOperation(duration, () => Replace(ops, live, seq.Slots, seq.Sizes, touch));
        foreach (nint p in live)
            ops.Free((void*)p);
        return ns;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int Replace<T>(T ops, nint[] live, int[] slots, nuint[] sizes, bool touch) where T : struct, IMallocOps
    {
        for (int i = 0; i < slots.Length; i++)
        {
            int s = slots[i];
            ops.Free((void*)live[s]);
            nuint size = sizes[i];
            byte* p = (byte*)ops.Alloc(size);
            if (touch)
            {
                for (nuint o = 0; o < size; o += 4096)
                    p[o] = 1;
            }
            live[s] = (nint)p;
        }
        return slots.Length;
    }

    /// <summary>
    /// ns per realloc: a block grows from 16 B to 1 MiB by doubling, its last byte written
    /// at each size, then is freed; <paramref name="mixedFirst"/> leaves the heap holding
    /// blocks of many sizes first (every other one of 2048 random 8 KiB..1 MiB blocks), the
    /// state that made the old block cache fall off a cliff.
    /// </summary>
    public static double ReallocChain<T>(T ops, bool mixedFirst, TimeSpan duration) where T : struct, IMallocOps
    {
        var kept = new List<nint>();
        if (mixedFirst)
        {
            var random = new Random(7);
            var all = new List<nint>();
            for (int i = 0; i < 2048; i++)
                all.Add((nint)ops.Alloc((nuint)random.Next(8 << 10, 1 << 20)));
            for (int i = 0; i < all.Count; i++)
            {
                if (i % 2 == 0)
                    ops.Free((void*)all[i]);
                else
                    kept.Add(all[i]);
            }
        }
        double ns = NsPerOperation(duration, () => Chain(ops));
        foreach (nint p in kept)
            ops.Free((void*)p);
        return ns;
    }

    /// <summary>Runs <paramref name="chunk"/> (which returns its operation count) until <paramref name="duration"/> has passed; ns per operation.</summary>
    private static double NsPerOperation(TimeSpan duration, Func<int> chunk)
    {
        long n = 0;
        var sw = Stopwatch.StartNew();
        do
        {
            n += chunk();
        }
        while (sw.Elapsed < duration);
        Interlocked.Add(ref s_operations, n);
        return sw.Elapsed.TotalNanoseconds / n;
    }

    /// <summary>
    /// Fills <paramref name="totalBytes"/> with live blocks of <paramref name="size"/> bytes
    /// (the first byte of each written), then frees them all. Returns the seconds per GiB
    /// and the most lines /proc/self/maps had meanwhile over the start.
    /// </summary>
    public static (double SecondsPerGiB, int ExtraMappings) FillAndFree<T>(T ops, nuint size, long totalBytes) where T : struct, IMallocOps
    {
        long count = totalBytes / (long)size;
        var blocks = new nint[count];
        int maps0 = MappingCount();
        var sw = Stopwatch.StartNew();
        for (long i = 0; i < count; i++)
        {
            var p = (byte*)ops.Alloc(size);
            if (p == null)
                throw new InsufficientMemoryException($"allocation {i} of {count} ({size} B) failed");
            *p = 1;
            blocks[i] = (nint)p;
        }
        int extra = MappingCount() - maps0;
        foreach (nint p in blocks)
            ops.Free((void*)p);
        double seconds = sw.Elapsed.TotalSeconds;
        return (seconds / ((double)count * (double)size / (1L << 30)), extra);
    }

    /// <summary>
    /// The purge's cost: <paramref name="rounds"/> times, 64 blocks of 1 MiB allocated and
    /// every page written, freed, and given back (Pages.Trim). Returns ns per page of a
    /// round and the RSS left after the last trim, over the start.
    /// </summary>
    public static (double NsPerPage, long RssAfterTrim) PurgeCycle(int rounds)
    {
        long before = RssBytes();
        var blocks = new nint[64];
        var sw = Stopwatch.StartNew();
        for (int r = 0; r < rounds; r++)
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                var p = (byte*)Kmalloc.Alloc(1 << 20);
                for (int o = 0; o < 1 << 20; o += 4096)
                    p[o] = 1;
                blocks[i] = (nint)p;
            }
            foreach (nint p in blocks)
                Kmalloc.Free((void*)p);
            Pages.Trim();
        }
        double ns = sw.Elapsed.TotalNanoseconds / ((double)rounds * blocks.Length * 256);
        return (ns, RssBytes() - before);
    }

    private static int MappingCount() => File.Exists("/proc/self/maps") ? File.ReadLines("/proc/self/maps").Count() : 0;

    /// <summary>Resident set size of this process (VmRSS), 0 where /proc is missing.</summary>
    public static long RssBytes()
    {
        if (!File.Exists("/proc/self/status"))
            return 0;
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }

    /// <summary>
    /// RSS growth for <paramref name="count"/> live objects of random sizes 8..1024 B (each
    /// written whole), and the share of it given back once all are freed (no trim call;
    /// <paramref name="settle"/> lets a decaying allocator decay).
    /// </summary>
    public static (long LiveBytes, long Payload, double ReturnedFraction) SmallObjectRss<T>(T ops, int count, TimeSpan settle) where T : struct, IMallocOps
    {
        var random = new Random(99);
        var blocks = new nint[count];
        long payload = 0;
        long before = RssBytes();
        for (int i = 0; i < count; i++)
        {
            int size = random.Next(8, 1025);
            var p = (byte*)ops.Alloc((nuint)size);
            new Span<byte>(p, size).Fill(1);
            blocks[i] = (nint)p;
            payload += size;
        }
        long live = RssBytes() - before;
        foreach (nint p in blocks)
            ops.Free((void*)p);
        Thread.Sleep(settle);
        long after = RssBytes() - before;
        return (live, payload, live <= 0 ? 0 : 1.0 - (double)after / live);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int Chain<T>(T ops) where T : struct, IMallocOps
    {
        int steps = 0;
        byte* p = (byte*)ops.Alloc(16);
        for (nuint size = 32; size <= 1 << 20; size *= 2, steps++)
        {
            p = (byte*)ops.Realloc(p, size);
            p[size - 1] = 1;
        }
        ops.Free(p);
        return steps;
    }
}
