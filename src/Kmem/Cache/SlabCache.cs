/*
 * Lock order, outermost first (as mm/slub.c states its own). A thread holding one of
 * these may take only those below it:
 *
 *   1. slab_mutex         SlabCacheRegistry: cache creation, merging and disposal
 *   2. sheaf_drain        per cache: one drainer (Shrink, Dispose, reclaim) at a time;
 *                         destructors run under it, in a leaf-only region
 *   3. barn_lock          per cache: the store of full sheaves
 *   4. list_lock          per cache: partial/full lists, slab free lists, counters
 *   5. pcpu_alloc_mutex   per PerCpuAllocator: every per-CPU allocation; taken with no
 *                         other Kmem lock held (PerCpu/PerCpuAllocator.cs)
 *   6. rcu_read_lock      not a lock: RCU read-side sections as the validator sees them.
 *                         Waiting for a grace period takes it (so never under a leaf, in a
 *                         destructor, or holding a lock a reader takes); a section may
 *                         begin anywhere but must not take slab_mutex or sheaf_drain
 *   7. rcu_gp_lock        Rcu: one grace period at a time (Synchronize, possibly under
 *                         slab_mutex and sheaf_drain: Shrink/Dispose of TypesafeByRcu)
 *
 * Leaves (LeafSpinLock), under which nothing is taken: rcu_registry, rcu_callbacks,
 * sheaf_table (the per-thread
 * table and a root's aliases), thread_slot, page_cache, pcpu_lock (all a per-CPU
 * free takes), and any leaf lock a destructor takes. Constructors run with no
 * allocator lock held, so they may allocate per-CPU memory; destructors may free it.
 *
 * Not locks, and taking none: the page layer (an atomic byte count, a CAS to install
 * a page-map leaf) and a thread's own sheaf, which its owner guards with the
 * Busy/DrainRequested handshake (Sheaves/Sheaf.cs). The handshake's rule completes the
 * order: an owner never waits for anything while its Busy is 1 but barn_lock and
 * list_lock, which no drainer holds while it waits, and clears Busy on every exit
 * (exceptions included), so a drainer that waits for Busy == 0 while holding
 * sheaf_drain cannot deadlock with it. A thread that
 * waits for the reclaim thread (page limit) holds no allocator lock and no Busy.
 */

using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kmem.Locking;
using Kmem.PageLayer;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// An object cache (kmem_cache): equal-sized objects carved from slabs, handed out
/// through a per-thread sheaf with no lock and no shared atomic on the common path.
/// </summary>
/// <remarks>
/// Layers: a thread's <see cref="Sheaf"/> → the cache's <see cref="Barn"/> of full
/// sheaves (barn_lock) → partial slabs (list_lock) → the page layer. Objects parked in
/// sheaves and the barn count as allocated by their slab; Shrink and Dispose drain
/// them back, from idle and exited threads too.
/// </remarks>
public sealed unsafe partial class SlabCache : IDisposable
{
    private readonly SlabLayout _layout;
    private readonly int _index;
    private readonly uint _span;
    private readonly bool _checked;

    /// <summary>
    /// Per-thread sheaves by <see cref="ThreadSlot"/> id; slot 0 is always null. Replaced
    /// (never shrunk in place) when it grows; an empty table after Dispose sends every
    /// call to the slow path, which reports the misuse.
    /// </summary>
    private Sheaf*[] _sheaves = new Sheaf*[1];

    private SlabCache(string name, int objectSize, SlabCacheOptions options)
    {
        _root = this;
        Name = name;
        ObjectSize = objectSize;
        Flags = options.Flags;
        Align = EffectiveAlign(objectSize, options);
        _checked = (Flags & SlabFlags.ConsistencyChecks) != 0;
        _randomize = (Flags & SlabFlags.RandomizeFreelist) != 0;
        _ctor = options.Constructor;
        _batchCtor = options.BatchConstructor;
        _dtor = options.Destructor;
        _batchDtor = options.BatchDestructor;
        _lifecycle = options.HasConstructor || options.HasDestructor;
        _minEmptySlabs = _lifecycle ? options.MinEmptySlabs : MaxEmptySlabs;
        _account = (Flags & SlabFlags.Account) != 0;
        _typesafeByRcu = (Flags & SlabFlags.TypesafeByRcu) != 0;
        _layout = ComputeLayout(objectSize, Align, linkOutside: _lifecycle || _typesafeByRcu, _checked, _account, out _groupOffset);
        _span = (uint)_layout.Span;
        SheafCapacity = Sheaf.CapacityFor(_layout.Stride);
        _barn = new Barn(SheafCapacity, _layout.Stride);
        _index = SlabCacheRegistry.AddLocked(this);
        Kmem.Reclaim.EnsureStarted();
    }

    /// <summary>
    /// The slot layout. A ctor/dtor or TypesafeByRcu cache keeps its free-list link after
    /// the object, so the object's bytes are never written by the allocator (SLUB's "free
    /// pointer outside the object" for ctor, RCU and poisoned caches: an RCU reader may
    /// still be reading a freed object); others keep it in the first word.
    /// An accounted cache keeps each object's memory-group id after that (the kernel's
    /// per-object obj_exts entry), at <paramref name="groupOffset"/> (-1 for none).
    /// </summary>
    private static SlabLayout ComputeLayout(int objectSize, int align, bool linkOutside, bool withBitmap, bool account, out int groupOffset)
    {
        int end = SlabLayout.AlignUp(objectSize, sizeof(void*));
        int linkOffset = 0;
        if (linkOutside)
        {
            linkOffset = end;
            end += sizeof(void*);
        }
        groupOffset = -1;
        if (account)
        {
            groupOffset = end;
            end += sizeof(void*);
        }
        int stride = SlabLayout.AlignUp(Math.Max(end, sizeof(void*)), align);
        return SlabLayout.Compute(stride, align, linkOffset, withBitmap);
    }

    /// <summary>Creates a cache of objects of <paramref name="objectSize"/> bytes (1 B to 128 KiB).</summary>
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
        return CreateOrMerge(name, objectSize, options);
    }

    /// <summary>Largest object size a cache accepts.</summary>
    public const int MaxObjectSize = 128 * 1024;

    public string Name { get; }

    /// <summary>The object size asked for; every object has at least this many bytes.</summary>
    public int ObjectSize { get; }

    /// <summary>Alignment every object has.</summary>
    public int Align { get; }

    public SlabFlags Flags { get; }

    /// <summary>Objects a per-thread sheaf holds.</summary>
    public int SheafCapacity { get; }

    internal int Index => _index;

    internal int Stride => _layout.Stride;

    public bool IsDisposed => _disposed;

    /// <summary>
    /// Allocates one object; false when no memory could be had (page limit, fault, OS)
    /// or the constructor returned false. An exception thrown by the constructor propagates.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAlloc(out void* obj)
    {
        if (LockValidator.Enabled && _lifecycle)
            CheckNotInOwnLifecycle();
        obj = TryAllocFast();
        if (obj == null)
            obj = AllocSlow(throwOnFailure: false);
        if (_account && obj != null)
            obj = ChargeObject(obj, throwOnFailure: false);
        return obj != null;
    }

    /// <summary>Allocates one object: as the constructor (or its last user) left it.</summary>
    /// <exception cref="SlabAllocationException">No memory could be had, or the constructor failed (<see cref="AllocationFailure.ConstructorFailed"/>).</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc()
    {
        if (LockValidator.Enabled && _lifecycle)
            CheckNotInOwnLifecycle();
        void* p = TryAllocFast();
        if (p == null)
            p = AllocSlow(throwOnFailure: true);
        return _account ? ChargeObject(p, throwOnFailure: true) : p;
    }

    /// <summary>
    /// Fast path: pop from this thread's sheaf. Must not take a lock, use an atomic,
    /// allocate, or call anything; on any doubt it returns null for the slow path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void* TryAllocFast()
    {
        Sheaf*[] table = _sheaves;
        uint id = (uint)ThreadSlot.Id;
        if (id < (uint)table.Length)
        {
            Sheaf* s = table[id];
            if (s != null)
            {
                // A volatile store (a plain mov on x64) so that the JIT cannot sink it below
                // the DrainRequested read; the drainer's process-wide barrier orders the CPU.
                Volatile.Write(ref s->Busy, 1);
                int n = s->Count - 1;
                if (n >= 0 && Volatile.Read(ref s->DrainRequested) == 0)
                {
                    void* p = Sheaf.Objects(s)[n];
                    s->Count = n;
                    Volatile.Write(ref s->Busy, 0);
                    return p;
                }
                Volatile.Write(ref s->Busy, 0);
            }
        }
        return null;
    }

    /// <summary>Frees an object of this cache.</summary>
    /// <exception cref="SlabUsageException">
    /// <paramref name="obj"/> is not an object of this cache (unknown address, another
    /// cache's slab, not at an object boundary), the cache is disposed, or (with
    /// <see cref="SlabFlags.ConsistencyChecks"/>) the object is already free.
    /// </exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(void* obj)
    {
        SlabHeader* slab = PageMap.Lookup(obj);
        if (slab == null || slab->CacheIndex != _index)
            ThrowForeignPointer(obj, slab);
        if (_account)
            UnchargeObject(obj, slab);
        FreeInSlab(obj, slab);
    }

    /// <summary>
    /// Frees <paramref name="obj"/>, known to lie in <paramref name="slab"/> of this cache.
    /// Fast path: a boundary check and a push onto this thread's sheaf; no lock, no atomic.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeInSlab(void* obj, SlabHeader* slab)
    {
        CheckObjectStart(obj, slab);
        if (!TryFreeFast(obj))
            FreeSlow(obj, slab);
    }

    /// <summary>
    /// Fast path: push onto this thread's sheaf. Must not take a lock, use an atomic,
    /// allocate, or call anything; false (full, draining, no sheaf) for the slow path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryFreeFast(void* obj)
    {
        Sheaf*[] table = _sheaves;
        uint id = (uint)ThreadSlot.Id;
        if (id < (uint)table.Length)
        {
            Sheaf* s = table[id];
            if (s != null)
            {
                Volatile.Write(ref s->Busy, 1);   // not sunk below the read that follows
                int n = s->Count;
                if (n < s->Capacity && Volatile.Read(ref s->DrainRequested) == 0)
                {
                    Sheaf.Objects(s)[n] = obj;
                    s->Count = n + 1;
                    Volatile.Write(ref s->Busy, 0);
                    return true;
                }
                Volatile.Write(ref s->Busy, 0);
            }
        }
        return false;
    }

    /// <summary>Throws unless <paramref name="obj"/> is the start of an object slot of <paramref name="slab"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckObjectStart(void* obj, SlabHeader* slab)
    {
        uint offset = (uint)((byte*)obj - (byte*)slab - _layout.ObjectOffset);
        if (offset >= _span || !_layout.IsObjectBoundary(offset))
            ThrowNotObjectStart(obj, slab);
    }

    /// <summary>
    /// Fills <paramref name="objects"/> with new objects; returns how many it allocated
    /// (fewer than asked only when memory ran out).
    /// </summary>
    public int AllocBulk(Span<nint> objects)
    {
        for (int i = 0; i < objects.Length; i++)
        {
            if (!TryAlloc(out void* p))
                return i;
            objects[i] = (nint)p;
        }
        return objects.Length;
    }

    /// <summary>Frees every object of <paramref name="objects"/>; each is checked as by <see cref="Free"/>.</summary>
    public void FreeBulk(ReadOnlySpan<nint> objects)
    {
        foreach (nint p in objects)
            Free((void*)p);
    }

    private static int EffectiveAlign(int objectSize, SlabCacheOptions options)
    {
        int align = Math.Max(options.Align, sizeof(void*));
        if ((options.Flags & SlabFlags.HwCacheAlign) != 0)
        {
            // calculate_alignment(): a cache line, halved while the object fits in half.
            int line = 64;
            while (objectSize <= line / 2 && line > sizeof(void*))
                line /= 2;
            align = Math.Max(align, line);
        }
        return align;
    }

    [Conditional("DEBUG")]
    private void AssertInvariants(SlabHeader* slab)
    {
        Debug.Assert(slab->Kind == BlockKind.Slab && slab->CacheIndex == _index, "slab of another cache");
        Debug.Assert(slab->InUse >= 0 && slab->InUse <= _layout.Objects, "slab in-use count out of range");
    }
}
