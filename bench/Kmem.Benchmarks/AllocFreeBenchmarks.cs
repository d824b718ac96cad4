using Kmem.Workloads;
using System.Buffers;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.ObjectPool;

namespace Kmem.Benchmarks;

/// <summary>
/// 64-byte alloc+free on one thread: one at a time (a pair per op), and 1024 allocs
/// then 1024 frees (1024 pairs per op; BenchmarkDotNet divides by OperationsPerInvoke).
/// </summary>
[MemoryDiagnoser]
public unsafe class AllocFreeBenchmarks
{
    private const int Size = 64;
    private const int Batch = 1024;
    private SlabCache _cache = null!;
    private CasFreeList _cas = null!;
    private DefaultObjectPool<Payload64> _pool = null!;
    private readonly nint[] _held = new nint[Batch];
    private readonly Payload64[] _heldObjects = new Payload64[Batch];
    private readonly byte[][] _heldArrays = new byte[Batch][];

    [GlobalSetup]
    public void Setup()
    {
        _cache = SlabCache.Create("bench-64", Size);
        _cas = new CasFreeList(Batch + 16, Size);
        BareFreeList.Seed(Batch + 16, Size);
        _pool = new DefaultObjectPool<Payload64>(new DefaultPooledObjectPolicy<Payload64>(), Batch + 16);
        // Warm everything so the measured loop sees steady state.
        for (int i = 0; i < Batch; i++)
            _held[i] = (nint)_cache.Alloc();
        foreach (nint p in _held)
            _cache.Free((void*)p);
    }

    [GlobalCleanup]
    public void Cleanup() => _cache.Dispose();

    [Benchmark(Baseline = true, Description = "bare free list (floor)")]
    public void Floor() => BareFreeList.Push(BareFreeList.Pop());

    [Benchmark(Description = "SlabCache")]
    public void Slab() => _cache.Free(_cache.Alloc());

    [Benchmark(Description = "Kmalloc(64)")]
    public void Kmalloc64() => Kmalloc.Free(Kmalloc.Alloc(Size));

    [Benchmark(Description = "NativeMemory")]
    public void Native() => NativeMemory.Free(NativeMemory.Alloc(Size));

    [Benchmark(Description = "CAS free list")]
    public void Cas() => _cas.Push(_cas.Pop());

    [Benchmark(Description = "DefaultObjectPool")]
    public void Pool() => _pool.Return(_pool.Get());

    [Benchmark(Description = "ArrayPool<byte>.Shared")]
    public void ArrayPoolShared() => ArrayPool<byte>.Shared.Return(ArrayPool<byte>.Shared.Rent(Size));

    [Benchmark(OperationsPerInvoke = Batch, Description = "batch: bare free list (floor)")]
    public void FloorBatch()
    {
        for (int i = 0; i < Batch; i++)
            _held[i] = (nint)BareFreeList.Pop();
        for (int i = 0; i < Batch; i++)
            BareFreeList.Push((void*)_held[i]);
    }

    [Benchmark(OperationsPerInvoke = Batch, Description = "batch: SlabCache")]
    public void SlabBatch()
    {
        for (int i = 0; i < Batch; i++)
            _held[i] = (nint)_cache.Alloc();
        for (int i = 0; i < Batch; i++)
            _cache.Free((void*)_held[i]);
    }

    [Benchmark(OperationsPerInvoke = Batch, Description = "batch: Kmalloc(64)")]
    public void KmallocBatch()
    {
        for (int i = 0; i < Batch; i++)
            _held[i] = (nint)Kmalloc.Alloc(Size);
        for (int i = 0; i < Batch; i++)
            Kmalloc.Free((void*)_held[i]);
    }

    [Benchmark(OperationsPerInvoke = Batch, Description = "batch: NativeMemory")]
    public void NativeBatch()
    {
        for (int i = 0; i < Batch; i++)
            _held[i] = (nint)NativeMemory.Alloc(Size);
        for (int i = 0; i < Batch; i++)
            NativeMemory.Free((void*)_held[i]);
    }

    [Benchmark(OperationsPerInvoke = Batch, Description = "batch: DefaultObjectPool")]
    public void PoolBatch()
    {
        for (int i = 0; i < Batch; i++)
            _heldObjects[i] = _pool.Get();
        for (int i = 0; i < Batch; i++)
            _pool.Return(_heldObjects[i]);
    }

    [Benchmark(OperationsPerInvoke = Batch, Description = "batch: ArrayPool<byte>.Shared")]
    public void ArrayPoolBatch()
    {
        for (int i = 0; i < Batch; i++)
            _heldArrays[i] = ArrayPool<byte>.Shared.Rent(Size);
        for (int i = 0; i < Batch; i++)
            ArrayPool<byte>.Shared.Return(_heldArrays[i]);
    }
}
