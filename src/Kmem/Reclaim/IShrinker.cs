namespace Kmem;

/// <summary>
/// Something reclaimable a user owns (the kernel's struct shrinker): a cache of objects
/// the program could rebuild. Under memory pressure the reclaim thread asks
/// <see cref="CountObjects"/> how many could go, then calls <see cref="ScanObjects"/> in
/// batches to free them. Both run on the reclaim thread with no allocator lock held.
/// </summary>
public interface IShrinker
{
    /// <summary>Name in reclaim statistics and failure reports.</summary>
    string Name { get; }

    /// <summary>Objects that could be freed now (an estimate; 0 for none).</summary>
    long CountObjects();

    /// <summary>Frees up to <paramref name="toScan"/> objects; returns how many it freed (0 or less: stop for this pass).</summary>
    long ScanObjects(long toScan);
}
