using Kmem.Diagnostics;
using Kmem.Locking;

namespace Kmem.Tests;

/// <summary>The leaf-lock rule of the destructor thread, enforced by the lock validator.</summary>
public unsafe class LockRuleTests
{
    [Fact]
    public void The_validator_is_on_for_the_tests() => Assert.True(LockValidator.IsEnabled);

    [Fact]
    public void A_destructor_taking_a_non_leaf_lock_is_reported_naming_both()
    {
        var registry = new KLock("test_registry_mutex");
        using var cache = SlabCache.Create("dtor-takes-mutex", 64, new SlabCacheOptions
        {
            Constructor = _ => true,
            Destructor = _ => { using (registry.Scope()) { } },
        });
        cache.Free(cache.Alloc());
        var e = Assert.Throws<LockValidationException>(cache.Shrink);
        Assert.Equal("test_registry_mutex", e.TakenLock);
        Assert.Contains("destructor of cache 'dtor-takes-mutex'", e.HeldLock, StringComparison.Ordinal);
        Assert.Contains("leaf", e.Message, StringComparison.Ordinal);
        // Every slab was still freed, and nothing is held.
        Assert.Equal(0, cache.GetStatistics().Slabs);
        Assert.False(registry.IsHeldByCurrentThread);
    }

    [Fact]
    public void A_destructor_taking_a_leaf_lock_is_fine()
    {
        var table = new LeafSpinLock("test_table_lock");
        long unregistered = 0;
        using var cache = SlabCache.Create("dtor-takes-leaf", 64, new SlabCacheOptions
        {
            Constructor = _ => true,
            Destructor = _ => { using (table.Scope()) unregistered++; },
        });
        cache.Free(cache.Alloc());
        cache.Shrink();
        Assert.Equal(cache.GetStatistics().ObjectsPerSlab, unregistered);
    }

    [Fact]
    public void A_lock_taken_under_a_leaf_lock_is_reported_and_not_taken()
    {
        var leaf = new LeafSpinLock("test_leaf");
        var other = new KLock("test_other");
        using (leaf.Scope())
        {
            var e = Assert.Throws<LockValidationException>(other.Enter);
            Assert.Equal("test_leaf", e.HeldLock);
            Assert.Equal("test_other", e.TakenLock);
            Assert.False(other.IsHeldByCurrentThread);
            Assert.Throws<LockValidationException>(() => new LeafSpinLock("test_leaf2").Enter());
        }
        using (other.Scope()) { }   // the failed attempt left nothing behind
    }

    [Fact]
    public void Allocating_while_holding_a_leaf_lock_is_reported_and_leaves_the_cache_drainable()
    {
        var leaf = new LeafSpinLock("test_leaf_alloc");
        using var cache = SlabCache.Create("alloc-under-leaf", 64, TestOptions.Unmerged);
        cache.Free(cache.Alloc());
        cache.Shrink();   // this thread now has an empty sheaf: the next Alloc refills under barn_lock
        using (leaf.Scope())
        {
            var e = Assert.Throws<LockValidationException>(() => cache.Alloc());
            Assert.Equal("test_leaf_alloc", e.HeldLock);
        }
        // The refused refill left no Busy flag set, so a drain does not wait for this thread.
        var drainer = new Thread(cache.Shrink) { IsBackground = true };
        drainer.Start();
        Assert.True(drainer.Join(TimeSpan.FromSeconds(10)), "Shrink hung on a sheaf left busy");
        cache.Free(cache.Alloc());
    }

    [Fact]
    public void A_destructor_allocating_from_its_own_cache_is_reported()
    {
        SlabCache? self = null;
        using var cache = SlabCache.Create("dtor-allocates", 64, new SlabCacheOptions
        {
            Destructor = _ => self!.Alloc(),
        });
        self = cache;
        cache.Free(cache.Alloc());
        var e = Assert.Throws<LockValidationException>(cache.Shrink);
        Assert.Contains("own destructor", e.Message, StringComparison.Ordinal);
        Assert.Contains("dtor-allocates", e.TakenLock, StringComparison.Ordinal);
        Assert.Equal(0, cache.GetStatistics().Slabs);
    }

    [Fact]
    public void Two_locks_taken_in_both_orders_are_reported_with_both_chains()
    {
        var a = new KLock("test_order_a");
        var b = new KLock("test_order_b");
        using (a.Scope())
        using (b.Scope())
        {
        }
        using (b.Scope())
        {
            var e = Assert.Throws<LockValidationException>(a.Enter);
            Assert.Contains("inversion", e.Message, StringComparison.Ordinal);
            Assert.Contains("test_order_b -> test_order_a", e.HeldChain, StringComparison.Ordinal);
            Assert.Contains("test_order_a -> test_order_b", e.OtherChain, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Taking_a_lock_recursively_is_reported()
    {
        var m = new KLock("test_recursive");
        using (m.Scope())
            Assert.Throws<LockValidationException>(m.Enter);
    }
}

/// <summary>The helper walks every cache: run alone, so it does not add constructor calls to other tests' caches.</summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class LifecycleCheckTests
{
    [Fact]
    public void The_populate_reclaim_helper_finds_the_bad_destructor_and_passes_the_good_one()
    {
        var mutex = new KLock("test_helper_mutex");
        var leaf = new LeafSpinLock("test_helper_leaf");
        using var bad = SlabCache.Create("helper-bad", 64, new SlabCacheOptions
        {
            Constructor = _ => { using (mutex.Scope()) return true; },   // a constructor may take any lock
            Destructor = _ => { using (mutex.Scope()) { } },
        });
        using var good = SlabCache.Create("helper-good", 64, new SlabCacheOptions
        {
            Constructor = _ => { using (mutex.Scope()) return true; },
            Destructor = _ => { using (leaf.Scope()) { } },
        });
        IReadOnlyList<LifecycleCheckResult> results = LifecycleCheck.RunAll();
        LifecycleCheckResult b = Assert.Single(results, r => r.CacheName == "helper-bad");
        LifecycleCheckResult g = Assert.Single(results, r => r.CacheName == "helper-good");
        Assert.IsType<LockValidationException>(b.Failure);
        Assert.True(g.Passed, g.Failure?.Message);
        Assert.Equal(bad.GetStatistics().ConstructorCalls, bad.GetStatistics().DestructorCalls);
        Assert.Equal(0, bad.GetStatistics().Slabs);
    }
}
