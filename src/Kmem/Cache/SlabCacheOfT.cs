using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// A <see cref="SlabCache"/> of <typeparamref name="T"/>: objects of sizeof(T) bytes,
/// aligned to at least the natural alignment of T's largest primitive field (8), as
/// <c>T*</c>. Contents are not initialised: a new object holds whatever the last user
/// left (use <c>*p = default</c> when that matters).
/// </summary>
public sealed unsafe class SlabCache<T> : IDisposable where T : unmanaged
{
    public SlabCache(string name, SlabCacheOptions? options = null) =>
        Cache = SlabCache.Create(name, sizeof(T), options);

    /// <summary>The untyped cache underneath (statistics, Shrink, sharing with untyped code).</summary>
    public SlabCache Cache { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Alloc() => (T*)Cache.Alloc();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAlloc(out T* obj)
    {
        bool ok = Cache.TryAlloc(out void* p);
        obj = (T*)p;
        return ok;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(T* obj) => Cache.Free(obj);

    public void Shrink() => Cache.Shrink();

    public SlabCacheStatistics GetStatistics() => Cache.GetStatistics();

    public void Dispose() => Cache.Dispose();
}
