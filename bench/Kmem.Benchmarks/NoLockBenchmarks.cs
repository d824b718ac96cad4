using BenchmarkDotNet.Attributes;

namespace Kmem.Benchmarks;

/// <summary>AllocNoLock+FreeNoLock 64 B on the fast path (this thread's sheaf) against Kmalloc.Alloc+Free (bar: within 1.5x).</summary>
public unsafe class NoLockBenchmarks
{
    [GlobalSetup]
    public void Setup()
    {
        Kmalloc.Free(Kmalloc.Alloc(64));   // this thread's kmalloc-64 sheaf exists
        Kmalloc.FreeNoLock(Kmalloc.AllocNoLock(64));
    }

    [Benchmark(Baseline = true, Description = "Kmalloc.Alloc+Free 64 B")]
    public void Plain() => Kmalloc.Free(Kmalloc.Alloc(64));

    [Benchmark(Description = "Kmalloc.AllocNoLock+FreeNoLock 64 B")]
    public void NoLock() => Kmalloc.FreeNoLock(Kmalloc.AllocNoLock(64));
}
