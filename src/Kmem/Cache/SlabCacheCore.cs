/*
 * Lock order, outermost first (as mm/slub.c states its own). A thread holding one of
 * these may take only those below it:
 *
 *   1. slab_mutex         SlabCacheRegistry: cache creation, merging and disposal
 *   2. sheaf_drain        per cache: one drainer (Shrink, Dispose, reclaim) at a time;
 *                         destructors run under it, in a leaf-only region
 *   3. barn_lock          per cache: the store of full sheaves
 *   4. list_lock          per cache: partial/full lists, slab free lists and bitmaps,
 *                         the counters below it
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
 * sheaf_table (Sheaves/SheafTable: the per-thread table and its readers), thread_slot,
 * page_pcp (per CPU, tried by its CPU), page_zone, pcpu_lock (all a per-CPU free takes), and any leaf lock a destructor
 * takes. Constructors run with no allocator lock held, so they may allocate per-CPU
 * memory; destructors may free it.
 *
 * Not locks, and taking none: the page layer (an atomic byte count, a CAS to install
 * a page-map leaf) and a thread's own sheaf, which its owner guards with the
 * Busy/State handshake (Sheaves/Sheaf.cs). The handshake's rule completes the order:
 * an owner never waits for anything while its Busy is 1 but barn_lock and list_lock,
 * which no drainer holds while it waits, and clears Busy on every exit (exceptions
 * included), so a drainer that waits for Busy == 0 while holding sheaf_drain cannot
 * deadlock with it. A thread that waits for the reclaim thread (page limit) holds no
 * allocator lock and no Busy.
 *
 * Where an object is, and who may touch it (slub.c's "To sum up"):
 *
 *   object state        on                         bitmap bit   counted in
 *   free in slab        its slab's free list       0            -
 *   parked              a sheaf or the barn        1            _objectsOut, CachedObjects
 *   allocated           the user                   1            _objectsOut, ActiveObjects
 *   deferred free       a DeferredFrees list       1            _objectsOut (until drained)
 *
 * Slab states (SlabHeader.List and the cache's lists, all under list_lock):
 *
 *   state        list                 InUse            leaves it by
 *   partial      _partial             1..Objects-1     TakeFromPartial (-> full), ReturnToSlabs (-> empty)
 *   empty        _partial             0                reuse, or UnlinkEmpty -> FreeSlabs (TypesafeByRcu:
 *                                                      -> grace period, in the same list_lock hold)
 *   full         _full                Objects          ReturnToSlabs (-> partial)
 *   unpublished  none                 0                NewSlab: constructed, then AddNewSlab (-> empty), or,
 *                                                      when a constructor failed, destructed and freed
 *                                                      in the failing allocation (DiscardUnpublished)
 *   grace period _rcuWaiting          0                TypesafeByRcu: the reclaim thread after a
 *                                                      grace period, or Shrink/Dispose after one
 *   leaked       _partial/_full       > 0              never: Dispose found live objects, so the
 *                                                      slab stays mapped for their users
 *
 * Every object enters through one door and leaves through one: allocations end in
 * AfterAlloc (Account's charge), frees begin in FreeObject (the boundary check,
 * Account's uncharge), for Free, Kmalloc.Free, FreeNoLock, FreeRcu and deferred frees
 * alike; a slab leaves only through FreeSlabs.
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
/// The public <see cref="SlabCache"/> is a handle on it: one per Create, several when
/// caches are merged; Kmalloc and the registry use the core directly.
/// </summary>
/// <remarks>
/// Layers: a thread's <see cref="Sheaf"/> → the cache's <see cref="Barn"/> of full
/// sheaves (barn_lock) → partial slabs (list_lock) → the page layer. Objects parked in
/// sheaves and the barn count as allocated by their slab; Shrink and Dispose drain
/// them back, from idle and exited threads too.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable",
    Justification = "A core's life is its handles': the barn is freed by Release when the last SlabCache handle is disposed with no "
        + "live object. A cache that leaked objects keeps it on purpose, so a later free of a leaked object still finds its cache.")]
internal sealed unsafe partial class SlabCacheCore
{
    // ---- Fixed at creation (read anywhere, no lock) ----
    private readonly SlabLayout _layout;
    /// <summary>This cache's slot in <see cref="SlabCacheRegistry"/>, stored in every slab header.</summary>
    private readonly int _index;
    /// <summary>Bytes of an object its user may use (<see cref="Kmalloc.UsableSize"/>): the stride up to the first metadata word.</summary>
    private readonly int _usable;
    /// <summary>Hooks on the one allocation exit and the one free entry: nonzero only when one is on (Account today).</summary>
    private readonly ObjectHooks _hooks;
    private readonly bool _checked;
    private readonly bool _randomize;
    private readonly bool _account;
    /// <summary>Account caches: offset in the slot of the charged group's id (0: none); -1 otherwise.</summary>
    private readonly int _groupOffset;
    private readonly bool _typesafeByRcu;
    private readonly SlabConstructor? _ctor;
    private readonly SlabBatchConstructor? _batchCtor;
    private readonly SlabDestructor? _dtor;
    private readonly SlabBatchDestructor? _batchDtor;
    /// <summary>A constructor or destructor: objects keep state, slabs are freed only by reclaim, Shrink or Dispose.</summary>
    private readonly bool _lifecycle;
    /// <summary>Empty slabs kept for reuse before they are returned.</summary>
    private readonly int _minEmptySlabs;
    private readonly Barn _barn;
    private readonly SheafTable _sheafTable;
    private readonly KLock _drainLock;
    private readonly KLock _listLock;

    // ---- Fast path: published by _sheafTable (under sheaf_table), read with one load ----
    /// <summary>
    /// Per-thread sheaves by <see cref="ThreadSlot"/> id; slot 0 is always null. Replaced
    /// (never shrunk in place) when it grows; an empty table after Dispose sends every
    /// call to the slow path, which reports the misuse.
    /// </summary>
    private Sheaf*[] _sheaves = new Sheaf*[1];

    // ---- slab_mutex ----
    /// <summary>The live handles: the one that created the cache first, then its aliases. The last one's Dispose destroys the cache.</summary>
    private readonly List<SlabCache> _handles = [];

    // ---- sheaf_drain: set under it; read anywhere ----
    /// <summary>
    /// True from the moment Dispose begins killing the sheaves, which is before Dispose's
    /// list_lock section: every list_lock holder after that section sees it. Every slow path
    /// tests it first, and again under list_lock where it touches the lists without a sheaf.
    /// </summary>
    private volatile bool _disposed;

    // ---- list_lock ----
    private SlabHeader* _partial;
    private SlabHeader* _full;
    private long _partialCount;
    private long _emptyCount;
    private long _slabCount;
    /// <summary>Objects off their slab's free list: with users, parked, or deferred. = Σ InUse over listed slabs.</summary>
    private long _objectsOut;
    private long _slabsAllocated;
    /// <summary>TypesafeByRcu: empty slabs waiting for a grace period, oldest first (cookies never decrease).</summary>
    private SlabHeader* _rcuWaitingHead;
    private SlabHeader* _rcuWaitingTail;
    private long _rcuWaitingCount;
    /// <summary>Frees dropped because their object was already free in its slab.</summary>
    private long _doubleFrees;
    /// <summary>Slab free lists found corrupted and rebuilt from the bitmap.</summary>
    private long _freeListRepairs;
    /// <summary>Empty sheaves refilled from the partial slabs (SLUB_STATS' sheaf_refill); slow path only.</summary>
    private long _sheafRefills;
    /// <summary>Full sheaves whose older half went back to the slabs because the barn was full (sheaf_flush); slow path only.</summary>
    private long _sheafFlushes;

    // ---- Atomic counters (no lock) ----
    /// <summary>Slabs given back to the page layer (counted in FreeSlabs, when they go).</summary>
    private long _slabsFreed;
    private long _slabsFreedByReclaim;
    private long _slabsFreedByShrink;
    private long _ctorCalls;
    private long _ctorFailures;
    private long _dtorCalls;
    /// <summary>Destructor calls the watchdog found running past <see cref="Reclaim.StallBudget"/>.</summary>
    private long _destructorStalls;
    /// <summary>Objects still live when the cache was disposed (their slabs stay mapped).</summary>
    private long _leakedObjects;

    // ---- Racy by design ----
    /// <summary>
    /// Slow-path entries (refills and flushes of sheaves; every call of a checked cache).
    /// Unchanged over a while means the cache is idle. Counted without an atomic: a lost
    /// increment only delays noticing activity. Statistics reads do not count.
    /// </summary>
    private long _activity;

    /// <summary>The hooks of the one allocation exit and the one free entry.</summary>
    [Flags]
    private enum ObjectHooks : byte
    {
        None = 0,
        /// <summary>SlabFlags.Account: charge after allocation, uncharge before free.</summary>
        Account = 1,
    }

    private SlabCacheCore(string name, int objectSize, SlabCacheOptions options)
    {
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
        _hooks = _account ? ObjectHooks.Account : ObjectHooks.None;
        _typesafeByRcu = (Flags & SlabFlags.TypesafeByRcu) != 0;
        _layout = ComputeLayout(objectSize, Align, linkOutside: _lifecycle || _typesafeByRcu, _account, out _groupOffset, out _usable);
        SheafCapacity = Sheaf.CapacityFor(_layout.Stride);
        _barn = new Barn(SheafCapacity, _layout.Stride);
        _sheafTable = new SheafTable(SheafCapacity);
        _drainLock = new KLock("sheaf_drain");
        _listLock = new KLock("list_lock");
        _sheafTable.AddReader(PublishSheaves);
        _index = SlabCacheRegistry.AddLocked(this);
        Kmem.Reclaim.EnsureStarted();
    }

    /// <summary>The sheaf table's reader: every new table array lands here for the fast path.</summary>
    private void PublishSheaves(Sheaf*[] table) => Volatile.Write(ref _sheaves, table);

    /// <summary>
    /// The slot layout. A ctor/dtor or TypesafeByRcu cache keeps its free-list link after
    /// the object, so the object's bytes are never written by the allocator (SLUB's "free
    /// pointer outside the object" for ctor, RCU and poisoned caches: an RCU reader may
    /// still be reading a freed object); others keep it in the first word.
    /// An accounted cache keeps each object's memory-group id after that (the kernel's
    /// per-object obj_exts entry), at <paramref name="groupOffset"/> (-1 for none).
    /// <paramref name="usable"/> is what the user may write: up to the first such word.
    /// Every slab has an allocation bitmap (one bit per object, set while it is off the
    /// free list), which catches a double free that reaches the slab.
    /// </summary>
    private static SlabLayout ComputeLayout(int objectSize, int align, bool linkOutside, bool account, out int groupOffset, out int usable)
    {
        int end = SlabLayout.AlignUp(objectSize, sizeof(void*));
        int linkOffset = 0;
        int metadata = -1;
        if (linkOutside)
        {
            linkOffset = metadata = end;
            end += sizeof(void*);
        }
        groupOffset = -1;
        if (account)
        {
            groupOffset = end;
            if (metadata < 0)
                metadata = end;
            end += sizeof(void*);
        }
        int stride = SlabLayout.AlignUp(Math.Max(end, sizeof(void*)), align);
        usable = metadata < 0 ? stride : metadata;
        return SlabLayout.Compute(stride, align, linkOffset, withBitmap: true);
    }

    /// <summary>The name of the handle that created the cache (aliases have names of their own).</summary>
    public string Name { get; }

    /// <summary>The object size asked for at creation; every object has at least this many bytes.</summary>
    public int ObjectSize { get; }

    /// <summary>Alignment every object has.</summary>
    public int Align { get; }

    /// <summary>The flags given at creation.</summary>
    public SlabFlags Flags { get; }

    /// <summary>Objects a per-thread sheaf holds.</summary>
    public int SheafCapacity { get; }

    internal int Index => _index;

    internal SlabLayout Layout => _layout;

    /// <summary>
    /// True when a handle may run the fast paths itself (it then reads the sheaf table):
    /// no allocation or free hook, and no validator check of a constructor or destructor
    /// calling its own cache.
    /// </summary>
    internal bool HandleFastPaths => _hooks == 0 && !(LockValidator.Enabled && _lifecycle);

    /// <summary>Makes <paramref name="reader"/> receive every sheaf table, now and on change.</summary>
    internal void AddSheafReader(Action<Sheaf*[]> reader) => _sheafTable.AddReader(reader);

    /// <summary>Stops publishing to <paramref name="reader"/> and hands it an empty table.</summary>
    internal void RemoveSheafReader(Action<Sheaf*[]> reader)
    {
        if (!_disposed)
            _sheafTable.RemoveReader(reader);
    }

    internal int Stride => _layout.Stride;

    /// <summary>Bytes of an object its user may use: the object size rounded up, short of the allocator's own words.</summary>
    internal int UsableSize => _usable;

    /// <summary>True once the cache is destroyed (its last handle disposed).</summary>
    public bool IsDisposed => _disposed;

    /// <summary>
    /// Allocates one object; false when no memory could be had (page limit, fault, OS)
    /// or the constructor returned false. An exception thrown by the constructor propagates.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryAlloc(out void* obj)
    {
        if (LockValidator.Enabled && _lifecycle)
            CheckNotInOwnLifecycle();
        void* p = TryAllocFast();
        if (p == null)
            p = AllocSlow(throwOnFailure: false);
        if (_hooks != 0 && p != null)
            p = AfterAlloc(p, throwOnFailure: false);
        obj = p;
        return p != null;
    }

    /// <summary>Allocates one object: as the constructor (or its last user) left it.</summary>
    /// <exception cref="SlabAllocationException">No memory could be had, or the constructor failed (<see cref="AllocationFailure.ConstructorFailed"/>).</exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void* Alloc()
    {
        if (LockValidator.Enabled && _lifecycle)
            CheckNotInOwnLifecycle();
        void* p = TryAllocFast();
        if (p == null)
            p = AllocSlow(throwOnFailure: true);
        return _hooks != 0 ? AfterAlloc(p, throwOnFailure: true) : p;
    }

    /// <summary>
    /// A handle's allocation after its own fast path missed: the core's whole door, out
    /// of line, so the handle's inlined code stays the fast path alone.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void* AllocFromHandle(bool throwOnFailure)
    {
        if (throwOnFailure)
            return Alloc();
        TryAlloc(out void* p);
        return p;
    }

    /// <summary>A handle's free after its own checks or push missed: the core's whole door, out of line.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void FreeFromHandle(void* obj) => Free(obj);

    /// <summary>Fast path: pop from this thread's sheaf (<see cref="SheafFastPath.TryPop"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void* TryAllocFast() => SheafFastPath.TryPop(_sheaves);

    /// <summary>Frees an object of this cache.</summary>
    /// <exception cref="SlabUsageException">
    /// <paramref name="obj"/> is not an object of this cache (unknown address, another
    /// cache's slab, not at an object boundary), or it is the object freed last on this
    /// thread (a double free), or, with <see cref="SlabFlags.ConsistencyChecks"/>, it is
    /// already free.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Free(void* obj)
    {
        SlabHeader* slab = PageMap.Lookup(obj);
        if (slab == null || slab->CacheIndex != _index)
            ThrowForeignPointer(obj, slab);
        FreeObject(obj, slab);
    }

    /// <summary>
    /// The one free entry (slab_free_hook): every free of an object of this cache comes
    /// here, whatever door it came in by (Free, Kmalloc.Free, FreeNoLock's deferred frees,
    /// FreeRcu), with <paramref name="slab"/> from the page map. The boundary check, the
    /// free hooks, then a push onto this thread's sheaf; no lock, no atomic.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeObject(void* obj, SlabHeader* slab)
    {
        CheckObjectStart(obj, slab);
        if (_hooks != 0)
            BeforeFree(obj);
        if (!TryFreeFast(obj))
            FreeSlow(obj, slab);
    }

    /// <summary>Fast path: push onto this thread's sheaf (<see cref="SheafFastPath.TryPush"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryFreeFast(void* obj) => SheafFastPath.TryPush(_sheaves, obj);

    /// <summary>Throws unless <paramref name="obj"/> is the start of an object slot of <paramref name="slab"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckObjectStart(void* obj, SlabHeader* slab)
    {
        if (!_layout.IsObjectStart(obj, slab))
            ThrowNotObjectStart(obj, slab);
    }

    internal static int EffectiveAlign(int objectSize, SlabCacheOptions options)
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
