namespace Kmem;

/// <summary>Optional settings of a <see cref="SlabCache"/>.</summary>
/// <remarks>
/// A cache with a constructor or destructor keeps each object's state from the
/// constructor (or its last user) across Alloc/Free cycles: its free-list link lives
/// after the object, it is never zeroed or poisoned, and it is never merged with another
/// cache. Give at most one of <see cref="Constructor"/>/<see cref="BatchConstructor"/>
/// and one of <see cref="Destructor"/>/<see cref="BatchDestructor"/>.
/// </remarks>
public sealed record SlabCacheOptions
{
    /// <summary>Object alignment in bytes: 0 for the default (8), else a power of two up to 4096.</summary>
    public int Align { get; init; }

    /// <summary>The cache's flags (<see cref="SlabFlags"/>); <see cref="SlabFlags.None"/> by default.</summary>
    public SlabFlags Flags { get; init; }

    /// <summary>Runs on every object of a new slab; may fail.</summary>
    public SlabConstructor? Constructor { get; init; }

    /// <summary>Runs on every constructed object when its slab is freed.</summary>
    public SlabDestructor? Destructor { get; init; }

    /// <summary>The batched form of <see cref="Constructor"/>: a whole slab in one call.</summary>
    public SlabBatchConstructor? BatchConstructor { get; init; }

    /// <summary>The batched form of <see cref="Destructor"/>: a whole slab in one call.</summary>
    public SlabBatchDestructor? BatchDestructor { get; init; }

    /// <summary>Empty slabs a cache with a constructor or destructor keeps constructed for reuse; the reclaim thread frees the rest. Default 2.</summary>
    public int MinEmptySlabs { get; init; } = 2;

    internal bool HasConstructor => Constructor != null || BatchConstructor != null;

    internal bool HasDestructor => Destructor != null || BatchDestructor != null;
}
