using Kmem.Locking;
using Kmem.Slab;

namespace Kmem.Diagnostics;

/// <summary>One cache's populate/reclaim cycle: null <see cref="Failure"/> when it passed.</summary>
public sealed record LifecycleCheckResult(string CacheName, int ObjectsChecked, Exception? Failure)
{
    public bool Passed => Failure == null;
}

/// <summary>
/// The test the thread suggested: walk every cache with a constructor or destructor and
/// run a populate/reclaim cycle on it, so a constructor or destructor that breaks the
/// lock rules is reported now, not on the day reclaim first frees its slab. Meaningful
/// with <see cref="LockValidator.IsEnabled"/>; without it only the always-on checks apply.
/// </summary>
public static class LifecycleCheck
{
    /// <summary>For each ctor/dtor cache: constructs one fresh slab and destructs it as reclaim would.</summary>
    public static IReadOnlyList<LifecycleCheckResult> RunAll()
    {
        var results = new List<LifecycleCheckResult>();
        foreach (SlabCacheCore cache in SlabCacheRegistry.Snapshot())
        {
            if (!cache.HasLifecycle)
                continue;
            Exception? failure = cache.PopulateAndReclaimOneSlab(out int objects);
            results.Add(new LifecycleCheckResult(cache.Name, objects, failure));
        }
        return results;
    }
}
