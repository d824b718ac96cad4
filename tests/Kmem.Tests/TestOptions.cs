namespace Kmem.Tests;

/// <summary>
/// Tests run in parallel; a cache that asserts its own statistics, identity or Dispose
/// behaviour must not be merged with another test's cache of the same size.
/// </summary>
internal static class TestOptions
{
    public static readonly SlabCacheOptions Unmerged = new() { Flags = SlabFlags.NoMerge };
}

/// <summary>Tests that change or walk process-wide state (page limit, reclaim settings, every cache) run alone.</summary>
[CollectionDefinition(nameof(GlobalStateCollection), DisableParallelization = true)]
public sealed class GlobalStateCollection;
