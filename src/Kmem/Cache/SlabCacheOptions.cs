namespace Kmem;

/// <summary>Optional settings of a <see cref="SlabCache"/>.</summary>
public sealed record SlabCacheOptions
{
    /// <summary>Object alignment in bytes: 0 for the default (8), else a power of two up to 4096.</summary>
    public int Align { get; init; }

    public SlabFlags Flags { get; init; }
}
