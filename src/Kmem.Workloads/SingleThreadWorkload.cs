using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Workloads;

/// <summary>
/// One thread, 64-byte alloc+free pairs, each allocator in its own specialised loop (no
/// virtual call in the way), timed for a fixed duration. The quick counterpart of
/// bench/Kmem.Benchmarks' AllocFreeBenchmarks for `kmem bench --quick`.
/// </summary>
public static unsafe class SingleThreadWorkload
{
    private const int Chunk = 1 << 16;

    public static IReadOnlyList<(string Name, Func<TimeSpan, double> Run)> Runs(int size) =>
    [
        ("bare free list (floor)", d => Time(d, () => FloorLoop(Chunk))),
        ("SlabCache", d => { using var c = SlabCache.Create($"single-{size}", size); return Time(d, () => SlabLoop(c, Chunk)); }),
        ("Kmalloc", d => Time(d, () => KmallocLoop((nuint)size, Chunk))),
        ("NativeMemory", d => Time(d, () => NativeLoop((nuint)size, Chunk))),
    ];

    private static double Time(TimeSpan duration, Action chunk)
    {
        BareFreeList.EnsureSeeded(64, 64);
        chunk();   // warm up: tiering, first slabs
        long pairs = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < duration)
        {
            chunk();
            pairs += Chunk;
        }
        return pairs / sw.Elapsed.TotalSeconds;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FloorLoop(int n)
    {
        for (int i = 0; i < n; i++)
            BareFreeList.Push(BareFreeList.Pop());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void SlabLoop(SlabCache cache, int n)
    {
        for (int i = 0; i < n; i++)
            cache.Free(cache.Alloc());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void KmallocLoop(nuint size, int n)
    {
        for (int i = 0; i < n; i++)
            Kmalloc.Free(Kmalloc.Alloc(size));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void NativeLoop(nuint size, int n)
    {
        for (int i = 0; i < n; i++)
            NativeMemory.Free(NativeMemory.Alloc(size));
    }
}
