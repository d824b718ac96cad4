using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// A <see cref="SlabCache"/> of <typeparamref name="T"/>: objects of <c>sizeof(T)</c> bytes,
/// handed out as <c>T*</c>, the typed form of <c>SlabCache.Create(name, sizeof(T), options)</c>.
/// </summary>
/// <typeparam name="T">
/// The object type: an unmanaged struct (no references), since the memory is outside the
/// garbage collector's heap and it never scans it.
/// </typeparam>
/// <remarks>
/// <para>Objects are aligned to <see cref="SlabCacheOptions.Align"/>, 8 bytes by default
/// (a cache line with <see cref="SlabFlags.HwCacheAlign"/>). Contents are not initialised:
/// a new object holds what its constructor (<see cref="SlabCacheOptions.Constructor"/>) or
/// its last user left, so write <c>*p = default</c> when that matters.</para>
/// <para>Every member is safe to call from any thread, and an object may be freed by another
/// thread than the one that allocated it. The common <see cref="Alloc"/> and
/// <see cref="Free"/> take no lock and no shared atomic. The memory stays valid until the
/// object is freed, whatever the garbage collector does; a pointer used after
/// <see cref="Free"/> is the caller's bug, as in C.</para>
/// <para>Pointers need an <c>unsafe</c> context: a project that uses this class sets
/// <c>&lt;AllowUnsafeBlocks&gt;true&lt;/AllowUnsafeBlocks&gt;</c>.</para>
/// </remarks>
/// <example>
/// <code>
/// using var points = new SlabCache&lt;Point&gt;("point");
/// Point* p = points.Alloc();
/// *p = new Point { X = 1, Y = 2 };
/// points.Free(p);
/// </code>
/// </example>
public sealed unsafe class SlabCache<T> : IDisposable where T : unmanaged
{
    /// <summary>Creates a cache of <typeparamref name="T"/> objects (see <see cref="SlabCache.Create"/>).</summary>
    /// <param name="name">
    /// The cache's name, shown in <see cref="SlabInfo"/>, errors, reports and metrics
    /// (<c>kmem.cache.name</c>); names need not be unique, but distinct ones tell caches apart.
    /// </param>
    /// <param name="options">Alignment, flags, constructor and destructor; null for the defaults.</param>
    /// <exception cref="ArgumentException">
    /// <paramref name="name"/> is null or blank, <c>sizeof(T)</c> is above
    /// <see cref="SlabCache.MaxObjectSize"/>, or the options are inconsistent (a bad alignment, both
    /// a constructor and a batch constructor, a negative <see cref="SlabCacheOptions.MinEmptySlabs"/>).
    /// </exception>
    /// <exception cref="NotSupportedException">A flag this version does not implement (<see cref="SlabFlags.RedZone"/>, <see cref="SlabFlags.Poison"/>, <see cref="SlabFlags.StoreUser"/>).</exception>
    public SlabCache(string name, SlabCacheOptions? options = null) =>
        Cache = SlabCache.Create(name, sizeof(T), options);

    /// <summary>
    /// The untyped cache underneath: its <see cref="SlabCache.Name"/>, <see cref="SlabCache.Align"/>,
    /// bulk calls and lock statistics, and a way to share the cache with untyped code.
    /// Disposing either disposes both.
    /// </summary>
    public SlabCache Cache { get; }

    /// <summary>Allocates one object, as its constructor (or its last user) left it.</summary>
    /// <returns>A pointer to <c>sizeof(T)</c> bytes, never null.</returns>
    /// <exception cref="SlabAllocationException">
    /// No memory could be had (<see cref="Pages.Limit"/>, the OS, an injected fault, a memory
    /// group's limit) or the constructor failed; <see cref="SlabAllocationException.Reason"/> says which.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Alloc() => (T*)Cache.Alloc();

    /// <summary>Allocates one object, or says it could not without throwing.</summary>
    /// <param name="obj">The object, or null when the call returns false.</param>
    /// <returns>False when no memory could be had or the constructor returned false; an exception the constructor throws propagates.</returns>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAlloc(out T* obj)
    {
        bool ok = Cache.TryAlloc(out void* p);
        obj = (T*)p;
        return ok;
    }

    /// <summary>Frees an object of this cache, from any thread; the pointer is checked first.</summary>
    /// <param name="obj">An object <see cref="Alloc"/> or <see cref="TryAlloc"/> returned, not freed since.</param>
    /// <exception cref="SlabUsageException">
    /// <paramref name="obj"/> is not an object of this cache (unknown address, another cache's
    /// object, a pointer inside an object), or it is the object this thread freed last (a
    /// double free), or, with <see cref="SlabFlags.ConsistencyChecks"/>, it is already free.
    /// Nothing was freed.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(T* obj) => Cache.Free(obj);

    /// <summary>
    /// Gives every empty slab back to the OS, after draining the free objects parked in every
    /// thread's per-thread cache (idle and exited threads included). Runs the destructor of
    /// their objects on the calling thread; a <see cref="SlabFlags.TypesafeByRcu"/> cache
    /// waits for a grace period first, so never call it inside an RCU read-side section.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    public void Shrink() => Cache.Shrink();

    /// <summary>
    /// A snapshot of the cache's counts: objects live and cached, slabs by state, bytes held,
    /// constructor and destructor calls (shared by caches merged into one). Also after
    /// Dispose. Takes the cache's list lock for a moment (not a leaf lock, so not from a destructor).
    /// </summary>
    public SlabCacheStatistics GetStatistics() => Cache.GetStatistics();

    /// <summary>
    /// Destroys the cache (<see cref="SlabCache.Dispose"/>): never throws, and a second call
    /// does nothing. Objects still live keep their slabs mapped and are reported as a leak;
    /// use <c>Cache.TryDispose</c> to refuse instead.
    /// </summary>
    public void Dispose() => Cache.Dispose();
}
