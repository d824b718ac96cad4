using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;

namespace Kmem.Benchmarks;

/// <summary>
/// The per-CPU layer's single-thread costs, each beside the plain operation it replaces:
/// a counter add beside an atomic add on a field, per-CPU allocation beside
/// NativeMemory, a per-use charge beside an accounted object's own charge. They explain
/// the seed experiment's gap between ctor-dtor and no-percpu (docs/benchmarks.md).
/// </summary>
public unsafe class PerCpuBenchmarks
{
    private PerCpuAllocator _allocator = null!;
    private MemoryGroup _group = null!;
    private PerCpuCounter* _counters;
    private long _field;
    private SlabCache _accounted = null!;
    private SlabCache _plain = null!;

    [GlobalSetup]
    public void Setup()
    {
        _allocator = new PerCpuAllocator("bench-percpu");
        _group = MemoryGroup.Root.CreateChild("bench");
        _counters = (PerCpuCounter*)NativeMemory.AllocZeroed((nuint)(4 * sizeof(PerCpuCounter)));
        PerCpuCounter.InitMany(new Span<PerCpuCounter>(_counters, 4), 0, _allocator);
        _accounted = SlabCache.Create("bench-accounted", 1024, new SlabCacheOptions { Flags = SlabFlags.Account | SlabFlags.NoMerge });
        _plain = SlabCache.Create("bench-unaccounted", 1024, new SlabCacheOptions { Flags = SlabFlags.NoMerge });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        PerCpuCounter.DestroyMany(new Span<PerCpuCounter>(_counters, 4));
        NativeMemory.Free(_counters);
        _accounted.Dispose();
        _plain.Dispose();
        _group.Dispose();
        _allocator.Dispose();
    }

    [Benchmark(Baseline = true, Description = "Interlocked.Add on a field")]
    public long AtomicField() => Interlocked.Add(ref _field, 1);

    [Benchmark(Description = "PerCpuCounter.Add")]
    public void CounterAdd() => _counters->Add(1);

    [Benchmark(Description = "PerCpuCounter.Sum")]
    public long CounterSum() => _counters->Sum();

    [Benchmark(Description = "CpuTopology.CurrentCpu")]
    public int CurrentCpu() => CpuTopology.CurrentCpu;

    [Benchmark(Description = "MemoryGroup charge+uncharge 64 B")]
    public void GroupCharge()
    {
        _group.TryCharge(64);
        _group.Uncharge(64);
    }

    [Benchmark(Description = "ChargeMany+UnchargeMany (4 counters)")]
    public void ChargeCounters()
    {
        var span = new Span<PerCpuCounter>(_counters, 4);
        PerCpuCounter.ChargeMany(span, _group);
        PerCpuCounter.UnchargeMany(span);
    }

    [Benchmark(Description = "PerCpuAllocator alloc+free 16 B")]
    public void PerCpuAllocFree() => _allocator.Free(_allocator.Alloc<long>(2));

    [Benchmark(Description = "NativeMemory alloc+free 16 B")]
    public void NativeAllocFree() => NativeMemory.Free(NativeMemory.Alloc(16));

    [Benchmark(Description = "SlabCache 1 KiB alloc+free, Account, in a group")]
    public void AccountedAllocFree()
    {
        using var scope = _group.Enter();
        _accounted.Free(_accounted.Alloc());
    }

    [Benchmark(Description = "SlabCache 1 KiB alloc+free, no Account")]
    public void PlainAllocFree() => _plain.Free(_plain.Alloc());
}
