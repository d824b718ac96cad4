using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem.Tests;

/// <summary>
/// SlabFlags.TypesafeByRcu: objects are reused at once, but a slab's memory (and its
/// destructor) waits for a grace period; Shrink and Dispose wait for it too.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class TypesafeByRcuTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private static SlabCacheOptions Typesafe(SlabCacheOptions? with = null) =>
        (with ?? new SlabCacheOptions()) with { Flags = SlabFlags.TypesafeByRcu | (with?.Flags ?? 0) };

    private static nint[] Fill(SlabCache cache, int slabs)
    {
        int n = cache.GetStatistics().ObjectsPerSlab * slabs;
        var objects = new nint[n];
        for (int i = 0; i < n; i++)
            objects[i] = (nint)cache.Alloc();
        return objects;
    }

    [Fact]
    public void A_freed_object_keeps_its_bytes_the_free_list_link_lives_outside_it()
    {
        using var cache = SlabCache.Create("rcu-layout", 64, Typesafe());
        Assert.True(cache.Stride > 64, "the link must not overlay the object");
        var p = (long*)cache.Alloc();
        for (int i = 0; i < 8; i++)
            p[i] = 0x5afe_0000 + i;
        cache.Free(p);
        var q = (long*)cache.Alloc();
        Assert.Equal((nint)p, (nint)q);   // reused at once, from this thread's sheaf
        for (int i = 0; i < 8; i++)
            Assert.Equal(0x5afe_0000 + i, q[i]);
        cache.Free(q);
    }

    [Fact]
    public void An_empty_slab_stays_mapped_to_its_cache_until_the_readers_are_gone()
    {
        using var cache = SlabCache.Create("rcu-pages", 64, Typesafe());
        nint[] objects = Fill(cache, 3);
        BackgroundCall shrink;
        using (new HeldReader())
        {
            foreach (nint p in objects)
                cache.Free((void*)p);
            shrink = BackgroundCall.Start(cache.Shrink);
            Assert.False(shrink.Join(TimeSpan.FromMilliseconds(300)), "Shrink returned slab memory while a reader was inside a section");
            foreach (nint p in objects)
            {
                SlabHeader* h = PageMap.Lookup((void*)p);
                Assert.True(h != null && h->Kind == BlockKind.Slab && h->CacheIndex == cache.Core.Index, "a reader could find foreign memory");
            }
        }
        Assert.True(shrink.Join(Patience));
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(0, s.Slabs);
        Assert.Equal(0, s.SlabsAwaitingGracePeriod);
        Assert.Equal(0, s.BytesHeld);
        Assert.True(PageMap.Lookup((void*)objects[0]) == null);
    }

    [Fact]
    public void Slabs_freed_by_Free_wait_for_the_grace_period_then_the_reclaim_thread_returns_them()
    {
        using var cache = SlabCache.Create("rcu-deferred", 64, Typesafe());
        nint[] objects = Fill(cache, 12);   // more than the barn and a sheaf hold
        long bytesFull = cache.GetStatistics().BytesHeld;
        using (new HeldReader())
        {
            // Freed from another thread's sheaf so the flushes reach the slabs now.
            var t = new Thread(() =>
            {
                foreach (nint p in objects)
                    cache.Free((void*)p);
            });
            t.Start();
            t.Join();
            Thread.Sleep(200);
            SlabCacheStatistics waiting = cache.GetStatistics();
            Assert.True(waiting.SlabsAwaitingGracePeriod > 0, "no slab was released");
            Assert.Equal(bytesFull, waiting.BytesHeld);   // still held: the reader may look at it
        }
        Assert.True(SpinWait.SpinUntil(() => cache.GetStatistics().SlabsAwaitingGracePeriod == 0, Patience),
            "the reclaim thread never freed the slabs after the grace period");
        Assert.True(cache.GetStatistics().BytesHeld < bytesFull);
    }

    [Fact]
    public void The_destructor_runs_only_after_the_grace_period()
    {
        long built = 0, destroyed = 0;
        using var cache = SlabCache.Create("rcu-dtor", 96, Typesafe(new SlabCacheOptions
        {
            Constructor = o => { *(long*)o = 0x0b1ec7; Interlocked.Increment(ref built); return true; },
            Destructor = o => { *(long*)o = 0; Interlocked.Increment(ref destroyed); },
        }));
        nint[] objects = Fill(cache, 2);
        BackgroundCall shrink;
        using (new HeldReader())
        {
            foreach (nint p in objects)
                cache.Free((void*)p);
            shrink = BackgroundCall.Start(cache.Shrink);
            Assert.False(shrink.Join(TimeSpan.FromMilliseconds(300)));
            Assert.Equal(0, Interlocked.Read(ref destroyed));
            Assert.All(objects, p => Assert.Equal(0x0b1ec7, *(long*)p));
        }
        Assert.True(shrink.Join(Patience));
        Assert.Equal(built, destroyed);
        Assert.Equal(cache.GetStatistics().ConstructedObjects, cache.GetStatistics().DestructorCalls);
    }

    [Fact]
    public void Dispose_waits_for_the_grace_period_before_returning_memory()
    {
        // Disposed on a background call below, which is what the test is about.
#pragma warning disable CA2000
        var cache = SlabCache.Create("rcu-dispose", 64, Typesafe());
#pragma warning restore CA2000
        nint[] objects = Fill(cache, 2);
        foreach (nint p in objects)
            cache.Free((void*)p);
        BackgroundCall dispose;
        using (new HeldReader())
        {
            dispose = BackgroundCall.Start(cache.Dispose);
            Assert.False(dispose.Join(TimeSpan.FromMilliseconds(300)), "Dispose returned memory under a reader");
            Assert.True(PageMap.Lookup((void*)objects[0]) != null);
        }
        Assert.True(dispose.Join(Patience));
        Assert.True(cache.IsDisposed);
        Assert.True(PageMap.Lookup((void*)objects[0]) == null);
    }

    [Fact]
    public void Dispose_waits_for_pending_FreeRcu_of_its_objects()
    {
        var cache = SlabCache.Create("rcu-dispose-freercu", 64, TestOptions.Unmerged);
        void* p = cache.Alloc();
        using (new HeldReader())
            Kmalloc.FreeRcu(p);
        cache.Dispose();   // would refuse with a live object if it did not wait
        Assert.True(cache.IsDisposed);
    }

    [Fact]
    public void Alloc_and_free_from_a_TypesafeByRcu_cache_work_concurrently_with_shrinks()
    {
        using var cache = SlabCache.Create("rcu-churn", 64, Typesafe());
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, 3).Select(w => BackgroundCall.Start(() =>
        {
            var held = new List<nint>();
            var rng = new Random(w);
            while (!stop.IsCancellationRequested)
            {
                for (int i = 0; i < 500; i++)
                {
                    var p = (long*)cache.Alloc();
                    *p = (nint)p;
                    held.Add((nint)p);
                }
                foreach (nint p in held)
                {
                    Assert.Equal(p, *(long*)p);
                    cache.Free((void*)p);
                }
                held.Clear();
                using (Rcu.Read())
                    Thread.SpinWait(rng.Next(100));
            }
        })).ToArray();
        for (int i = 0; i < 20; i++)
        {
            cache.Shrink();
            Thread.Sleep(10);
        }
        stop.Cancel();
        Assert.All(workers, w => Assert.True(w.Join(Patience)));
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
        Assert.Equal(0, cache.GetStatistics().SlabsAwaitingGracePeriod);
    }
}
