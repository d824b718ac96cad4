using System.Collections.Concurrent;

namespace Kmem.Tests;

public unsafe class ConcurrencyTests
{
    /// <summary>
    /// Threads allocate mixed sizes, write a pattern, and pass objects to the next
    /// thread, which checks the pattern and frees them: every object crosses threads.
    /// At the end every slab goes back.
    /// </summary>
    [Fact]
    public void Cross_thread_stress_with_mixed_sizes_ends_with_every_slab_returned()
    {
        const int threads = 4;
        const int perThread = 150_000;
        int[] sizes = [8, 24, 64, 100, 256, 700, 2048, 5000];
        var caches = sizes.Select(s => SlabCache.Create($"stress-{s}", s, TestOptions.Unmerged)).ToArray();
        var queues = Enumerable.Range(0, threads).Select(_ => new BlockingCollection<(nint, int, uint)>(4096)).ToArray();
        var errors = new ConcurrentQueue<string>();

        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            var outbox = queues[(t + 1) % threads];
            var inbox = queues[t];
            int sent = 0, received = 0;
            while (sent < perThread || received < perThread)
            {
                if (sent < perThread && (received >= perThread || rng.Next(2) == 0))
                {
                    int which = rng.Next(sizes.Length);
                    uint* p = (uint*)caches[which].Alloc();
                    uint tag = (uint)(t << 24 | sent);
                    int words = sizes[which] / 4;
                    for (int w = 0; w < words; w++)
                        p[w] = tag + (uint)w;
                    if (!outbox.TryAdd(((nint)p, which, tag), 10))
                    {
                        // Consumer is behind: check and free locally to keep moving.
                        Check(p, which, tag);
                        caches[which].Free(p);
                    }
                    sent++;
                }
                else if (inbox.TryTake(out var item, 10))
                {
                    Check((uint*)item.Item1, item.Item2, item.Item3);
                    if (rng.Next(2) == 0)
                        caches[item.Item2].Free((void*)item.Item1);
                    else
                        Kmalloc.Free((void*)item.Item1);   // kfree of a cache object
                    received++;
                }
                else if (sent >= perThread)
                {
                    received = perThread; // producers done; drained below
                }
            }
        })).ToList();

        void Check(uint* p, int which, uint tag)
        {
            int words = sizes[which] / 4;
            for (int w = 0; w < words; w++)
            {
                if (p[w] != tag + (uint)w)
                {
                    errors.Enqueue($"object 0x{(nint)p:x} of {caches[which].Name}: word {w} is {p[w]:x}, expected {tag + (uint)w:x}");
                    return;
                }
            }
        }

        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        foreach (var q in queues)
        {
            while (q.TryTake(out var item))
            {
                Check((uint*)item.Item1, item.Item2, item.Item3);
                caches[item.Item2].Free((void*)item.Item1);
            }
        }
        Assert.Empty(errors);
        foreach (var cache in caches)
        {
            Assert.Equal(0, cache.GetStatistics().ActiveObjects);
            cache.Shrink();
            var stats = cache.GetStatistics();
            Assert.Equal(0, stats.Slabs);
            Assert.Equal(0, stats.CachedObjects);
            Assert.Equal(stats.SlabsAllocated, stats.SlabsFreed);
            cache.Dispose();
        }
    }

    [Fact]
    public void Shrink_reaches_objects_parked_by_threads_that_have_exited()
    {
        using var cache = SlabCache.Create("exited-threads", 128, TestOptions.Unmerged);
        var threads = Enumerable.Range(0, 6).Select(_ => new Thread(() =>
        {
            // Leave a partly filled sheaf behind: allocate a few slabs' worth, free all.
            var objects = new nint[3000];
            cache.AllocBulk(objects);
            cache.FreeBulk(objects);
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        var before = cache.GetStatistics();
        Assert.Equal(0, before.ActiveObjects);
        Assert.True(before.CachedObjects > 0, "expected objects parked in the exited threads' sheaves");
        cache.Shrink();
        var after = cache.GetStatistics();
        Assert.Equal(0, after.CachedObjects);
        Assert.Equal(0, after.Slabs);
        Assert.Equal(0, after.BytesHeld);
    }

    [Fact]
    public void Shrink_reaches_sheaves_of_idle_live_threads_while_they_wait()
    {
        using var cache = SlabCache.Create("idle-threads", 64, TestOptions.Unmerged);
        using var parked = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var idle = new Thread(() =>
        {
            var objects = new nint[500];
            cache.AllocBulk(objects);
            cache.FreeBulk(objects);
            parked.Set();
            release.Wait();
            // After the drain this thread's sheaf still works.
            void* p = cache.Alloc();
            cache.Free(p);
        });
        idle.Start();
        parked.Wait();
        Assert.True(cache.GetStatistics().CachedObjects > 0);
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
        release.Set();
        idle.Join();
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Shrink_and_statistics_run_safely_beside_busy_threads()
    {
        using var cache = SlabCache.Create("shrink-under-load", 96, TestOptions.Unmerged);
        using var stop = new CancellationTokenSource();
        long checksFailed = 0;
        var workers = Enumerable.Range(0, 3).Select(t => new Thread(() =>
        {
            var mine = new List<nint>();
            var rng = new Random(t);
            while (!stop.IsCancellationRequested)
            {
                if (mine.Count < 500 && rng.Next(2) == 0)
                {
                    long* p = (long*)cache.Alloc();
                    *p = (long)p ^ 0x5A5A;
                    mine.Add((nint)p);
                }
                else if (mine.Count > 0)
                {
                    nint p = mine[^1];
                    mine.RemoveAt(mine.Count - 1);
                    if (*(long*)p != (p ^ 0x5A5A))
                        Interlocked.Increment(ref checksFailed);
                    cache.Free((void*)p);
                }
            }
            foreach (nint p in mine)
                cache.Free((void*)p);
        })).ToList();
        workers.ForEach(w => w.Start());
        for (int i = 0; i < 200; i++)
        {
            cache.Shrink();
            var s = cache.GetStatistics();
            Assert.True(s.ActiveObjects <= 1500 + cache.SheafCapacity * 4, $"active {s.ActiveObjects}");
            Thread.Sleep(1);
        }
        stop.Cancel();
        workers.ForEach(w => w.Join());
        Assert.Equal(0, Interlocked.Read(ref checksFailed));
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
    }

    [Fact]
    public void Thread_churn_reuses_thread_slots_instead_of_growing_without_bound()
    {
        using var cache = SlabCache.Create("churn", 32, TestOptions.Unmerged);
        int maxBefore = Sheaves.ThreadSlot.MaxId;
        for (int round = 0; round < 40; round++)
        {
            var t = new Thread(() => cache.Free(cache.Alloc()));
            t.Start();
            t.Join();
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        // Dead threads' slots were recycled: growth is bounded by the threads other
        // tests run meanwhile, far below one slot per thread started here.
        Assert.True(Sheaves.ThreadSlot.MaxId - maxBefore < 20, $"slots grew by {Sheaves.ThreadSlot.MaxId - maxBefore}");
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
    }
}
