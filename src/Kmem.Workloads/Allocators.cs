using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Workloads;

/// <summary>An allocator under test: 64-byte (or any fixed size) alloc and free.</summary>
public abstract unsafe class Allocator : IDisposable
{
    public abstract string Name { get; }
    public abstract void* Alloc();
    public abstract void Free(void* p);

    /// <summary>Releases what the allocator holds (the dispose pattern: subclasses override <see cref="Dispose(bool)"/>).</summary>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the allocator's resources; <paramref name="disposing"/> is false only from a finalizer (none has one).</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>The allocators the workloads compare, each for objects of <paramref name="size"/> bytes.</summary>
    public static IReadOnlyList<Func<Allocator>> All(int size) =>
    [
        () => new SlabCacheAllocator(size),
        () => new KmallocAllocator(size),
        () => new NativeMemoryAllocator(size),
    ];
}

public sealed unsafe class SlabCacheAllocator(int size) : Allocator
{
    private readonly SlabCache _cache = SlabCache.Create($"workload-{size}", size);
    public SlabCache Cache => _cache;
    public override string Name => "SlabCache";
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public override void* Alloc() => _cache.Alloc();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public override void Free(void* p) => _cache.Free(p);
    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _cache.Dispose();
        base.Dispose(disposing);
    }
}

public sealed unsafe class KmallocAllocator(int size) : Allocator
{
    public override string Name => "Kmalloc";
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public override void* Alloc() => Kmalloc.Alloc((nuint)size);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public override void Free(void* p) => Kmalloc.Free(p);
}

/// <summary>NativeMemory.Alloc/Free: glibc malloc on Linux.</summary>
public sealed unsafe class NativeMemoryAllocator(int size) : Allocator
{
    public override string Name => "NativeMemory";
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public override void* Alloc() => NativeMemory.Alloc((nuint)size);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public override void Free(void* p) => NativeMemory.Free(p);
}
