namespace Kmem;

/// <summary>
/// Builds the state of a fresh object, once, when its slab is created (not at each
/// Alloc). Returns false when it cannot (the allocation then fails); may throw, which
/// fails the allocation the same way and propagates. Must not allocate from its own cache.
/// </summary>
public unsafe delegate bool SlabConstructor(void* obj);

/// <summary>
/// Tears down the state a constructor built, when the object's slab is freed: on the
/// reclaim thread or inside an explicit Shrink/Dispose, never inside an application's
/// Free. Must not fail, may take only leaf locks (<see cref="Locking.LeafSpinLock"/>),
/// and must not allocate from its own cache.
/// </summary>
public unsafe delegate void SlabDestructor(void* obj);

/// <summary>
/// Constructs every object of a new slab in one call, in free-list order. Returns how
/// many it built, from the start of <paramref name="objects"/>: fewer than all fails the
/// allocation, and only those built are destructed.
/// </summary>
public delegate int SlabBatchConstructor(ReadOnlySpan<nint> objects);

/// <summary>Destructs every constructed object of a slab being freed, in one call; the rules of <see cref="SlabDestructor"/> apply.</summary>
public delegate void SlabBatchDestructor(ReadOnlySpan<nint> objects);
