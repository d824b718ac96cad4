using BenchmarkDotNet.Attributes;

namespace Kmem.Benchmarks;

/// <summary>What one thread-static read costs here: the fast path pays it once per call.</summary>
public class ThreadStaticProbe
{
    [ThreadStatic] private static int t_value;

    [Benchmark]
    public int ReadThreadStaticInt() => ++t_value;

    [Benchmark]
    public int ReadThreadSlotId() => Sheaves.ThreadSlot.Id;
}
