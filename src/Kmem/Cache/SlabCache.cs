using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Kmem.Locking;
using Kmem.PageLayer;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// An object cache (kmem_cache): equal-sized objects carved from slabs, handed out
/// through a per-thread sheaf with no lock and no shared atomic on the common path.
/// <see cref="SlabCache{T}"/> is its typed form.
/// </summary>
/// <remarks>
/// <para>Objects are raw unmanaged memory (<c>void*</c>) of at least <see cref="ObjectSize"/>
/// bytes aligned to <see cref="Align"/>; the garbage collector neither moves nor scans them,
/// so they may hold no managed references. Contents are not initialised: a new object holds
/// what its constructor (<see cref="SlabCacheOptions.Constructor"/>) or its last user left.</para>
/// <para>Every member is safe to call from any thread, and an object may be freed by another
/// thread than the one that allocated it. Each pointer given to <see cref="Free"/> is checked
/// (see <see cref="SlabUsageException"/>). Pointers need an <c>unsafe</c> context: set
/// <c>&lt;AllowUnsafeBlocks&gt;true&lt;/AllowUnsafeBlocks&gt;</c> in the project.</para>
/// </remarks>
// This is a handle: its name, its Dispose, and a reference to the cache proper
// (SlabCacheCore, whose file states the lock order and the slab states). Caches that merge
// (see MergedInto) are several handles on one core. The handle runs the sheaf fast paths
// itself over its own copy of the sheaf table (published by the core's SheafTable), so a
// call costs no hop to the core; everything else goes to _core, which Dispose sets to null
// (and empties the table), so use after Dispose is reported whichever handle it comes through.
public sealed unsafe class SlabCache : IDisposable
{
    // ---- Fast path: fixed at creation, but the table (published under sheaf_table) ----
    /// <summary>
    /// The core's sheaf table, as published to this handle; empty once this handle is
    /// disposed, and always empty when the core has allocation or free hooks (its fast
    /// paths then always miss, and every call goes through the core's doors).
    /// </summary>
    private Sheaf*[] _sheaves = new Sheaf*[1];
    private readonly SlabLayout _layout;
    /// <summary>
    /// The page-map tag of the core's slabs (<see cref="PageMap.SlabTag"/>), or
    /// uint.MaxValue, which no entry carries, when the core's index does not fit a tag.
    /// </summary>
    private readonly uint _tag;
    /// <summary>This handle's reader of the sheaf table (one delegate, so it can be removed).</summary>
    private readonly Action<Sheaf*[]> _sheafReader;

    // ---- slab_mutex ----
    /// <summary>The cache proper while this handle is live; null once it is disposed.</summary>
    private volatile SlabCacheCore? _core;

    // ---- Fixed ----
    /// <summary>The same core, kept after Dispose for statistics and names.</summary>
    private readonly SlabCacheCore _origin;
    /// <summary>True when Create found a cache to merge with instead of making one.</summary>
    private readonly bool _merged;

    /// <summary>A handle on <paramref name="core"/>. Caller holds slab_mutex.</summary>
    private SlabCache(SlabCacheCore core, bool merged, string name, int objectSize, SlabFlags flags)
    {
        _core = _origin = core;
        _merged = merged;
        Name = name;
        ObjectSize = objectSize;
        Flags = flags;
        _layout = core.Layout;
        _tag = PageMap.SlabTag(core.Index) is var tag && tag != PageMap.EscapeTag ? tag : uint.MaxValue;
        _sheafReader = table => Volatile.Write(ref _sheaves, table);
        if (core.HandleFastPaths)
            core.AddSheafReader(_sheafReader);
    }

    /// <summary>Creates a cache of objects of <paramref name="objectSize"/> bytes (1 B to <see cref="MaxObjectSize"/>, 256 KiB).</summary>
    /// <param name="name">
    /// The cache's name, shown in <see cref="SlabInfo"/>, errors, reports and metrics
    /// (<c>kmem.cache.name</c>); names need not be unique, but distinct ones tell caches apart.
    /// </param>
    /// <param name="objectSize">Bytes per object (<c>sizeof</c> of the struct it holds).</param>
    /// <param name="options">Alignment, flags, constructor and destructor; null for the defaults.</param>
    /// <returns>The cache; dispose it when done (<see cref="Dispose"/>).</returns>
    /// <remarks>
    /// A cache without constructor, destructor or debug flags may be merged with a
    /// compatible existing one (see <see cref="MergedInto"/>), as SLUB does, unless
    /// <see cref="SlabFlags.NoMerge"/> is given.
    /// </remarks>
    /// <exception cref="ArgumentException">Bad name, size, alignment or lifecycle options.</exception>
    /// <exception cref="NotSupportedException">A flag this version does not implement.</exception>
    public static SlabCache Create(string name, int objectSize, SlabCacheOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(objectSize, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(objectSize, MaxObjectSize);
        options ??= new SlabCacheOptions();
        if (options.Align != 0 && (!SlabLayout.IsPowerOfTwo(options.Align) || options.Align > OsMemory.PageSize))
            throw new ArgumentException($"cache '{name}': Align must be 0 or a power of two up to {OsMemory.PageSize}, not {options.Align}", nameof(options));
        if (options.Constructor != null && options.BatchConstructor != null)
            throw new ArgumentException($"cache '{name}': give Constructor or BatchConstructor, not both", nameof(options));
        if (options.Destructor != null && options.BatchDestructor != null)
            throw new ArgumentException($"cache '{name}': give Destructor or BatchDestructor, not both", nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.MinEmptySlabs, nameof(options.MinEmptySlabs));
        const SlabFlags implemented = SlabFlags.HwCacheAlign | SlabFlags.ConsistencyChecks | SlabFlags.NoMerge | SlabFlags.RandomizeFreelist
            | SlabFlags.Account | SlabFlags.TypesafeByRcu;
        SlabFlags missing = options.Flags & ~implemented;
        if (missing != 0)
            throw new NotSupportedException($"cache '{name}': flags {missing} are not implemented yet");
        SlabCacheCore.CreateOrMerge(name, objectSize, options,
            (core, merged) => new SlabCache(core, merged, name, objectSize, options.Flags), out SlabCache handle);
        return handle;
    }

    /// <summary>Largest object size a cache accepts.</summary>
    public const int MaxObjectSize = 256 * 1024;

    /// <summary>The name given at creation (a merged cache keeps its own name).</summary>
    public string Name { get; }

    /// <summary>The object size asked for; every object has at least this many bytes.</summary>
    public int ObjectSize { get; }

    /// <summary>Alignment every object has.</summary>
    public int Align => _origin.Align;

    /// <summary>The flags given at creation.</summary>
    public SlabFlags Flags { get; }

    /// <summary>Objects a per-thread sheaf holds.</summary>
    public int SheafCapacity => _origin.SheafCapacity;

    /// <summary>True when the cache has a constructor or a destructor.</summary>
    public bool HasLifecycle => _origin.HasLifecycle;

    /// <summary>True once Dispose has run on this handle.</summary>
    public bool IsDisposed => _core == null;

    /// <summary>The cache this one is merged into, or null for a cache of its own.</summary>
    public string? MergedInto => _merged ? _origin.Name : null;

    /// <summary>Names of the caches merged into this one (empty for a merged cache or an unmerged one).</summary>
    public IReadOnlyList<string> AliasNames => _origin.IsFirstHandle(this) ? _origin.AliasNames : [];

    internal SlabCacheCore Core => _origin;

    internal int Stride => _origin.Stride;

    /// <summary>
    /// Allocates one object; false when no memory could be had (page limit, fault, OS)
    /// or the constructor returned false. An exception thrown by the constructor propagates.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAlloc(out void* obj)
    {
        void* p = SheafFastPath.TryPop(_sheaves);
        if (p != null)
        {
            obj = p;
            return true;
        }
        obj = Live().AllocFromHandle(throwOnFailure: false);
        return obj != null;
    }

    /// <summary>Allocates one object: as the constructor (or its last user) left it.</summary>
    /// <exception cref="SlabAllocationException">No memory could be had, or the constructor failed (<see cref="AllocationFailure.ConstructorFailed"/>).</exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc()
    {
        void* p = SheafFastPath.TryPop(_sheaves);
        if (p != null)
            return p;
        return Live().AllocFromHandle(throwOnFailure: true);   // the slow path (or the hooks), through the core's door
    }

    /// <summary>Frees an object of this cache.</summary>
    /// <exception cref="SlabUsageException">
    /// <paramref name="obj"/> is not an object of this cache (unknown address, another
    /// cache's slab, not at an object boundary), or it is the object freed last on this
    /// thread (a double free), or, with <see cref="SlabFlags.ConsistencyChecks"/>, it is
    /// already free.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(void* obj)
    {
        // The core's checks (the page map, this cache's slab, an object's start), then the
        // push; any miss goes to the core, which checks again and reports.
        // The entry's tag names the cache, so the slab header is not touched (a cache with
        // an escaped tag, past 65,533 caches, always takes the core's path).
        ulong entry = PageMap.LookupEntry(obj);
        if ((uint)(entry >> PageMap.TagShift) == _tag && _layout.IsObjectStart(obj, (SlabHeader*)(entry & PageMap.AddressMask)) && SheafFastPath.TryPush(_sheaves, obj))
            return;
        Live(obj).FreeFromHandle(obj);
    }

    /// <summary>
    /// Fills <paramref name="objects"/> with new objects; returns how many it allocated
    /// (fewer than asked only when memory ran out or the constructor failed: the first that
    /// many elements are set, and those objects are yours to free).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    public int AllocBulk(Span<nint> objects)
    {
        SlabCacheCore core = Live();
        for (int i = 0; i < objects.Length; i++)
        {
            if (!core.TryAlloc(out void* p))
                return i;
            objects[i] = (nint)p;
        }
        return objects.Length;
    }

    /// <summary>Frees every object of <paramref name="objects"/>, in order; each is checked as by <see cref="Free"/>.</summary>
    /// <exception cref="SlabUsageException">
    /// An element is not a live object of this cache (see <see cref="Free"/>); the elements
    /// before it were freed, it and those after it were not.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    public void FreeBulk(ReadOnlySpan<nint> objects)
    {
        SlabCacheCore core = Live();
        foreach (nint p in objects)
            core.Free((void*)p);
    }

    /// <summary>
    /// Returns every empty slab to the page layer, after draining the objects parked in
    /// every thread's sheaf (idle and exited threads included) and in the barn; the
    /// destructor runs on their objects, here, on the calling thread. A TypesafeByRcu cache
    /// waits here for a grace period first (so never call it inside a read-side section).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    /// <exception cref="Exception">The first exception a destructor threw (a bug in it); every slab was freed regardless.</exception>
    public void Shrink() => Live().Shrink();

    /// <summary>A snapshot of the cache's counts (shared by merged caches); also after Dispose.</summary>
    public SlabCacheStatistics GetStatistics() => _origin.GetStatistics();

    /// <summary>
    /// The figures of this cache's locks (shared by merged caches), in lock order:
    /// sheaf_drain, barn_lock, list_lock, sheaf_table.
    /// </summary>
    public IReadOnlyList<LockStatistics> GetLockStatistics() => _origin.GetLockStatistics();

    /// <summary>
    /// Destroys the cache (kmem_cache_destroy). Never throws, and a second call does
    /// nothing. Parked objects are drained, destructors run, and every slab is returned,
    /// except, when objects are still live, the slabs that hold them: those stay mapped so
    /// the live pointers stay valid, the leak is reported (<see cref="SlabReports"/>, kind
    /// <see cref="SlabReportKind.Leak"/>, naming the objects, and
    /// <see cref="SlabCacheStatistics.LeakedObjects"/>), and their memory is never reused.
    /// A destructor that throws is reported the same way. Use <see cref="TryDispose"/> to
    /// refuse instead. After it, every call but statistics throws
    /// <see cref="ObjectDisposedException"/>; a call racing it either completes first or
    /// throws that, and nothing is corrupted.
    /// </summary>
    /// <remarks>
    /// A merged cache is destroyed when its last handle is disposed (see
    /// <see cref="MergedInto"/>); the others only end their own use. It first waits for
    /// pending <see cref="Kmalloc.FreeRcu"/> frees and <see cref="Kmalloc.FreeNoLock"/>
    /// deferrals and, for a TypesafeByRcu cache, for a grace period before its slabs'
    /// memory is returned.
    /// </remarks>
    public void Dispose() => Destroy(strict: false, out _);

    /// <summary>
    /// The strict Dispose: with live objects it disposes nothing, returns false and names
    /// up to 16 of them in <paramref name="liveObjects"/>, and the cache stays as it was
    /// (drained, usable). Otherwise as <see cref="Dispose"/> (true; true again when already
    /// disposed).
    /// </summary>
    public bool TryDispose(out IReadOnlyList<nint> liveObjects) => Destroy(strict: true, out liveObjects);

    private bool Destroy(bool strict, out IReadOnlyList<nint> liveObjects)
    {
        liveObjects = [];
        if (_core == null)
            return true;
        // Objects of this cache may be waiting in Kmalloc.FreeRcu (kvfree_rcu_barrier in
        // kmem_cache_destroy), or in FreeNoLock's lists. Waited for before slab_mutex: a
        // callback may take it.
        if (Rcu.PendingCallbacks != 0 && !Rcu.IsCallbackThread)
            Rcu.Barrier();
        DeferredFrees.Drain();
        bool done;
        using (SlabCacheRegistry.Lock.Scope())
        {
            done = _origin.Release(this, strict, out liveObjects);
            if (done)
            {
                _core = null;
                _origin.RemoveSheafReader(_sheafReader);   // the fast paths miss from now on
            }
        }
        if (SlabReports.HasDeferred)
            SlabReports.Flush();
        if (done)
            Pages.Trim();
        return done;
    }

    /// <summary>The core, or ObjectDisposedException naming this handle. One load and a predicted branch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private SlabCacheCore Live(void* obj = null) => _core ?? ThrowDisposed(obj);

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private SlabCacheCore ThrowDisposed(void* obj) => throw SlabCacheCore.Disposed(Name, obj);

    /// <inheritdoc/>
    public override string ToString() => $"SlabCache '{Name}' ({ObjectSize} B)";
}
