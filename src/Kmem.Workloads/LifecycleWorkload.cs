using System.Runtime.InteropServices;
using Kmem.Locking;

namespace Kmem.Workloads;

/// <summary>One run of <see cref="LifecycleWorkload"/>.</summary>
/// <param name="Mode">"per-use", "ctor-dtor" or "plain".</param>
/// <param name="CyclesPerSecond">Object lifecycles (alloc, touch, free) per second.</param>
/// <param name="ExpensivePerCycle">Buffers built and registered per lifecycle, over the cache's whole life (warm-up included).</param>
public sealed record LifecycleResult(string Mode, int Threads, double CyclesPerSecond, double ExpensivePerCycle, int ObjectsPerSlab);

/// <summary>
/// The seed series' idea on a plain object: its state is expensive to build (a 64-byte
/// native buffer, registered in a global table under a lock) and its lifecycle only
/// touches it. Modes:
/// <list type="bullet">
/// <item>per-use: the buffer is built and torn down in every lifecycle (what a cache without a constructor forces);</item>
/// <item>ctor-dtor: the constructor builds it once per object per slab, the destructor tears it down when reclaim frees the slab;</item>
/// <item>plain: the same object with no expensive state (the floor).</item>
/// </list>
/// The registry lock is a <see cref="LeafSpinLock"/>: the destructor takes it, so it must be a leaf.
/// </summary>
public static unsafe class LifecycleWorkload
{
    public const int ObjectSize = 128;
    private const int Burst = 16;

    public static readonly string[] Modes = ["per-use", "ctor-dtor", "plain"];

    private static readonly LeafSpinLock s_registryLock = new("object_registry");
    private static readonly Dictionary<nint, nint> s_registry = [];
    private static long s_expensive;

    private static nint Build(void* obj)
    {
        nint buffer = (nint)NativeMemory.Alloc(64);
        *(long*)buffer = 0;
        using (s_registryLock.Scope())
        {
            s_registry.Add(buffer, (nint)obj);
            s_expensive++;
        }
        return buffer;
    }

    private static void TearDown(nint buffer)
    {
        using (s_registryLock.Scope())
            s_registry.Remove(buffer);
        NativeMemory.Free((void*)buffer);
    }

    /// <summary>Runs <paramref name="mode"/> on <paramref name="threads"/> threads for <paramref name="duration"/>, after a warm-up.</summary>
    public static LifecycleResult Run(string mode, int threads, TimeSpan duration)
    {
        bool perUse = mode == "per-use";
        SlabCacheOptions options = mode == "ctor-dtor"
            ? new SlabCacheOptions
            {
                Flags = SlabFlags.NoMerge,
                Constructor = o => { *(nint*)o = Build(o); return true; },
                Destructor = o => TearDown(*(nint*)o),
            }
            : new SlabCacheOptions { Flags = SlabFlags.NoMerge };
        // Counted over the cache's whole life, cold start included: the constructor's work
        // on the first slabs is part of the price.
        long before = Interlocked.Read(ref s_expensive);
        using SlabCache cache = SlabCache.Create($"lifecycle-{mode}", ObjectSize, options);

        bool hasState = mode != "plain";
        double cycles = Measure(cache, perUse, hasState, threads, TimeSpan.FromMilliseconds(200), out _);   // warm: slabs built, sheaves full
        cycles += Measure(cache, perUse, hasState, threads, duration, out double perSecond);
        long expensive = Interlocked.Read(ref s_expensive) - before;
        var result = new LifecycleResult(mode, threads, perSecond, expensive / cycles, cache.GetStatistics().ObjectsPerSlab);
        cache.Shrink();   // destructors run here for ctor-dtor
        return result;
    }

    private static double Measure(SlabCache cache, bool perUse, bool hasState, int threads, TimeSpan duration, out double perSecond)
    {
        var (cycles, seconds) = TimedThreads.Run(threads, duration, stop =>
        {
            var held = stackalloc nint[Burst];
            long n = 0;
            while (!stop.Requested)
            {
                for (int i = 0; i < Burst; i++)
                {
                    var o = (nint*)cache.Alloc();
                    if (perUse)
                        o[0] = Build(o);
                    o[1] = i;   // the lifecycle's own work: touch the object...
                    if (hasState)
                        (*(long*)o[0])++;   // ...and its state, where it has some
                    held[i] = (nint)o;
                }
                for (int i = 0; i < Burst; i++)
                {
                    var o = (nint*)held[i];
                    if (perUse)
                        TearDown(o[0]);
                    cache.Free(o);
                }
                n += Burst;
            }
            return n;
        });
        perSecond = cycles / seconds;
        return cycles;
    }
}
