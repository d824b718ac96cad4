using Kmem.Workloads;
using BenchmarkDotNet.Attributes;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem.Benchmarks;

/// <summary>
/// Where the time of a SlabCache alloc+free goes: the whole pair, the pair without the
/// page-map lookup and ownership check, and the page-map lookup alone.
/// </summary>
public unsafe class FastPathAnatomy
{
    private SlabCache _cache = null!;
    private SlabHeader* _slab;
    private void* _obj;

    [GlobalSetup]
    public void Setup()
    {
        _cache = SlabCache.Create("anatomy", 64);
        _obj = _cache.Alloc();
        _slab = PageMap.Lookup(_obj);
        BareFreeList.Seed(64, 64);
    }

    [Benchmark(Baseline = true)]
    public void Floor() => BareFreeList.Push(BareFreeList.Pop());

    [Benchmark]
    public void AllocFree() => _cache.Free(_cache.Alloc());

    [Benchmark]
    public void AllocFreeInKnownSlab() => _cache.Core.FreeObject(_cache.Alloc(), _slab);

    [Benchmark]
    public nint PageMapLookup() => (nint)PageMap.Lookup(_obj);
}
