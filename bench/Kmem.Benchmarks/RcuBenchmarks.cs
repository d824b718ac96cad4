using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;

namespace Kmem.Benchmarks;

/// <summary>
/// The read side against its bars: a pair of empty non-inlined calls (at most 2x) and an
/// uncontended lock statement (at least 5x dearer).
/// </summary>
public class RcuReadSideBenchmarks
{
    private readonly object _monitor = new();
    private readonly Lock _lock = new();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Empty1()
    {
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Empty2()
    {
    }

    [GlobalSetup]
    public void Setup()
    {
        Rcu.ReadLock();   // registers this thread: the measured calls are the common path
        Rcu.ReadUnlock();
    }

    [Benchmark(Baseline = true, Description = "empty call pair")]
    public void EmptyCallPair()
    {
        Empty1();
        Empty2();
    }

    [Benchmark(Description = "Rcu.ReadLock+ReadUnlock")]
    public void ReadLockUnlock()
    {
        Rcu.ReadLock();
        Rcu.ReadUnlock();
    }

    [Benchmark(Description = "using (Rcu.Read())")]
    public void UsingRead()
    {
        using (Rcu.Read())
        {
        }
    }

    [Benchmark(Description = "lock (object), uncontended")]
    public void LockStatement()
    {
        lock (_monitor)
        {
        }
    }

    [Benchmark(Description = "lock (Lock), uncontended")]
    public void LockType()
    {
        lock (_lock)
        {
        }
    }
}

/// <summary>
/// Synchronize with no readers and with reader threads looping over short sections
/// (8 threads on this 2-core machine: most of them preempted at any moment, some inside
/// a section, and the grace period must wait for those to run again).
/// </summary>
[MedianColumn]
public class RcuSynchronizeBenchmarks
{
    private readonly List<Thread> _readers = [];
    private volatile bool _stop;
    private long _sink;

    [Params(0, 2, 4, 8)]
    public int ReaderThreads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _stop = false;
        for (int i = 0; i < ReaderThreads; i++)
        {
            var t = new Thread(ReaderLoop) { IsBackground = true };
            _readers.Add(t);
            t.Start();
        }
    }

    private void ReaderLoop()
    {
        long local = 0;
        while (!_stop)
        {
            using (Rcu.Read())
            {
                for (int i = 0; i < 16; i++)
                    local += Volatile.Read(ref _sink);
            }
        }
        Interlocked.Add(ref _sink, local);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _stop = true;
        _readers.ForEach(t => t.Join());
        _readers.Clear();
    }

    [Benchmark(Description = "Rcu.Synchronize")]
    public void Synchronize() => Rcu.Synchronize();
}

/// <summary>TypesafeByRcu costs nothing on the fast path: 64 B alloc+free against the same cache without the flag.</summary>
public unsafe class TypesafeByRcuBenchmarks
{
    private SlabCache _plain = null!;
    private SlabCache _typesafe = null!;

    [GlobalSetup]
    public void Setup()
    {
        _plain = SlabCache.Create("bench-plain-64", 64, new SlabCacheOptions { Flags = SlabFlags.NoMerge });
        _typesafe = SlabCache.Create("bench-rcu-64", 64, new SlabCacheOptions { Flags = SlabFlags.TypesafeByRcu });
        _plain.Free(_plain.Alloc());
        _typesafe.Free(_typesafe.Alloc());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _plain.Dispose();
        _typesafe.Dispose();
    }

    [Benchmark(Baseline = true, Description = "SlabCache 64 B")]
    public void Plain() => _plain.Free(_plain.Alloc());

    [Benchmark(Description = "SlabCache 64 B, TypesafeByRcu")]
    public void Typesafe() => _typesafe.Free(_typesafe.Alloc());
}
