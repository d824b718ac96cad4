using Kmem.Locking;
using Kmem.Slab;

namespace Kmem.Diagnostics;

/// <summary>One cache's populate/reclaim cycle: null <see cref="Failure"/> when it passed.</summary>
/// <param name="CacheName">The cache checked (the first name of a merged one).</param>
/// <param name="ObjectsChecked">Objects of the fresh slab that were constructed and then destructed.</param>
/// <param name="Failure">
/// What the cycle threw: a <see cref="LockValidationException"/> for a broken lock rule, a
/// <see cref="TimeoutException"/> for a cycle that blocked past the timeout, or whatever
/// the constructor or destructor threw; null when it passed.
/// </param>
public sealed record LifecycleCheckResult(string CacheName, int ObjectsChecked, Exception? Failure)
{
    /// <summary>True when the cycle ran without an exception (<see cref="Failure"/> is null).</summary>
    public bool Passed => Failure == null;
}

/// <summary>
/// A check to run in your tests: walk every cache with a constructor or destructor and
/// run a populate/reclaim cycle on it, so a constructor or destructor that breaks the
/// lock rules is reported now, not on the day reclaim first frees its slab. The leaf-only
/// rule for destructors (only <see cref="LeafSpinLock"/>s) is checked in every build; the
/// rest of the rules (lock order, recursion, nothing under a leaf lock) only with lock
/// validation on: the AppContext switch <c>Kmem.LockValidation</c> (in a test project,
/// <c>&lt;RuntimeHostConfigurationOption Include="Kmem.LockValidation" Value="true" /&gt;</c>)
/// or the environment variable <c>KMEM_LOCK_VALIDATION=1</c>, read once at startup. What no
/// validator sees (a <c>lock</c>, a <see cref="System.Threading.Lock"/>, a wait, I/O) is
/// caught by the forms with a timeout if it blocks there.
/// </summary>
/// <remarks>
/// A cycle allocates and frees one slab of each cache, on the calling thread (or one
/// thread per cache with a timeout), beside whatever else runs: it is safe to run while
/// the caches are in use, but meant for tests.
/// </remarks>
public static class LifecycleCheck
{
    /// <summary>For each ctor/dtor cache: constructs one fresh slab and destructs it as reclaim would, on this thread.</summary>
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

    /// <summary>
    /// As <see cref="RunAll()"/>, each cycle on a thread of its own, failed with a
    /// <see cref="TimeoutException"/> if it has not finished within <paramref name="timeout"/>:
    /// a constructor or destructor that blocks. The blocked thread is left where it is
    /// (holding that cache's sheaf_drain, as a stuck reclaim worker would).
    /// </summary>
    public static IReadOnlyList<LifecycleCheckResult> RunAll(TimeSpan timeout)
    {
        var results = new List<LifecycleCheckResult>();
        foreach (SlabCacheCore cache in SlabCacheRegistry.Snapshot())
        {
            if (cache.HasLifecycle)
                results.Add(RunWithTimeout(cache, timeout));
        }
        return results;
    }

    /// <summary>One cache's cycle, on a thread of its own, with a timeout (see <see cref="RunAll(TimeSpan)"/>).</summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    public static LifecycleCheckResult Run(SlabCache cache, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ObjectDisposedException.ThrowIf(cache.IsDisposed, cache);
        return RunWithTimeout(cache.Core, timeout);
    }

    private static LifecycleCheckResult RunWithTimeout(SlabCacheCore cache, TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        Exception? failure = null;
        int objects = 0;
        var t = new Thread(() => failure = cache.PopulateAndReclaimOneSlab(out objects))
        {
            IsBackground = true,
            Name = $"kmem-lifecycle-check '{cache.Name}'",
        };
        t.Start();
        if (!t.Join(timeout))
        {
            return new LifecycleCheckResult(cache.Name, Volatile.Read(ref objects), new TimeoutException(
                $"cache '{cache.Name}': the populate/reclaim cycle has not finished in {timeout.TotalMilliseconds:F0} ms " +
                $"(thread state {t.ThreadState}): its constructor or destructor blocks or spins, on something Kmem's lock validator cannot see " +
                "(a lock statement, a System.Threading.Lock, a SemaphoreSlim, an event, I/O). Destructors may take only leaf locks (LeafSpinLock)."));
        }
        return new LifecycleCheckResult(cache.Name, objects, failure);
    }
}
