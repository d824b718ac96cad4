using System.Runtime.InteropServices;
using Kmem.Locking;
using Xunit.Abstractions;

namespace Kmem.Tests;

/// <summary>
/// Kmalloc.AllocNoLock / FreeNoLock (seed 003): never waiting, busy-bucket retry, deferred
/// frees, re-entry from the lock hook, from constructors and destructors. Alone: they set
/// the process-wide hook and check the kmalloc caches' counts.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class NoLockTests(ITestOutputHelper output)
{
    private static void Fill(void* p, nuint size, byte seed) => new Span<byte>(p, (int)size).Fill(seed);

    private static void Verify(void* p, nuint size, byte seed)
    {
        var bytes = new ReadOnlySpan<byte>(p, (int)size);
        int bad = bytes.IndexOfAnyExcept(seed);
        if (bad >= 0)
            throw new InvalidOperationException($"object 0x{(nint)p:x} of {size} B corrupted at byte {bad}: {bytes[bad]:x2}, expected {seed:x2}");
    }

    private static byte SeedOf(void* p, nuint size) => (byte)(((nint)p >> 3) ^ (nint)size ^ 0x5a);

    [Fact]
    public void AllocNoLock_gives_usable_memory_that_either_free_accepts()
    {
        void* a = Kmalloc.AllocNoLock(64);
        void* b = Kmalloc.AllocNoLock(100);
        Assert.True(a != null && b != null);
        Assert.True(Kmalloc.UsableSize(b) >= 100);
        Fill(a, 64, 1);
        Fill(b, 100, 2);
        Kmalloc.FreeNoLock(a);
        Kmalloc.Free(b);   // the plain Free takes it too
        Kmalloc.FreeNoLock(null);
        Assert.True(Kmalloc.AllocNoLock(Kmalloc.MaxCachedSize + 1) == null, "no large allocation without waiting");
    }

    [Fact]
    public void A_bad_free_gets_the_same_clear_errors_as_Free()
    {
        void* p = Kmalloc.Alloc(64);
        try
        {
            var inside = Assert.Throws<SlabUsageException>(() => Kmalloc.FreeNoLock((byte*)p + 8));
            Assert.Contains("kmalloc-64", inside.Message);
            Assert.Equal((nint)((byte*)p + 8), inside.Address);
            void* foreign = NativeMemory.Alloc(64);
            var e = Assert.Throws<SlabUsageException>(() => Kmalloc.FreeNoLock(foreign));
            Assert.Contains($"0x{(nint)foreign:x}", e.Message);
            NativeMemory.Free(foreign);
        }
        finally
        {
            Kmalloc.Free(p);
        }
    }

    [Fact]
    public void A_double_free_through_FreeNoLock_is_refused_at_once_and_hurts_nobody()
    {
        using var cache = SlabCache.Create("nolock-checked", 48, new SlabCacheOptions { Flags = SlabFlags.NoMerge | SlabFlags.ConsistencyChecks });
        void* p = cache.Alloc();
        void* other = cache.Alloc();
        Kmalloc.FreeNoLock(p);   // a checked cache frees under list_lock: marked now, freed later
        var again = Assert.Throws<SlabUsageException>(() => Kmalloc.FreeNoLock(p));
        Assert.Contains("double free", again.Message);
        Assert.Contains("nolock-checked", again.Message);
        Assert.Equal((nint)p, again.Address);
        Assert.Throws<SlabUsageException>(() => cache.Free(p));   // the plain Free sees it too
        Kmalloc.DrainDeferredFrees();
        Assert.Equal(1, cache.GetStatistics().ActiveObjects);   // only the other object: nothing lost
        Assert.Equal(0, Kmalloc.GetNoLockStatistics().DeferredPending);
        cache.Free(other);
    }

    [Fact]
    public void A_double_free_found_only_when_the_deferred_free_runs_is_recorded_not_thrown_at_the_drainer()
    {
        using var cache = SlabCache.Create("nolock-checked-late", 48, new SlabCacheOptions { Flags = SlabFlags.NoMerge | SlabFlags.ConsistencyChecks });
        void* a = cache.Alloc();
        void* p = cache.Alloc();
        cache.Free(p);
        long failures = Kmalloc.GetNoLockStatistics().DeferredFailures;
        // Re-entered under the cache's own list_lock (as from a hook or a destructor): the
        // check cannot be made without waiting, so the free is queued unchecked.
        bool fired = false;
        LockHook.Callback = (lockClass, point) =>
        {
            if (!fired && lockClass == "list_lock" && point == LockHookPoint.Releasing)
            {
                fired = true;
                Kmalloc.FreeNoLock(p);
            }
        };
        try
        {
            cache.Free(a);   // a checked cache frees under list_lock
        }
        finally
        {
            LockHook.Callback = null;
        }
        Assert.True(fired);
        Kmalloc.DrainDeferredFrees();
        Assert.True(Kmalloc.GetNoLockStatistics().DeferredFailures > failures);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Dispose_after_FreeNoLock_sees_no_live_object()
    {
        var cache = SlabCache.Create("nolock-then-dispose", 88, TestOptions.Unmerged);
        var objects = Enumerable.Range(0, 50).Select(_ => (nint)cache.Alloc()).ToList();
        long deferredBefore = Kmalloc.GetNoLockStatistics().FreesDeferred;
        // A thread with no sheaf of this cache: every FreeNoLock is deferred.
        var t = new Thread(() => objects.ForEach(p => Kmalloc.FreeNoLock((void*)p)));
        t.Start();
        t.Join();
        Assert.True(Kmalloc.GetNoLockStatistics().FreesDeferred >= deferredBefore + objects.Count);
        cache.Dispose();   // drains the deferred lists before it counts
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(0, s.LeakedObjects);
        Assert.Equal(0, s.Slabs);
    }

    [Fact]
    public void A_large_block_freed_without_waiting_is_returned_by_the_next_drain()
    {
        void* big = Kmalloc.Alloc(512 * 1024);
        long live = Kmalloc.LargeAllocations;
        Kmalloc.FreeNoLock(big);
        Assert.Equal(live, Kmalloc.LargeAllocations);   // deferred: unmapping may wait
        Kmalloc.DrainDeferredFrees();
        Assert.Equal(live - 1, Kmalloc.LargeAllocations);
    }

    [Fact]
    public void Reentry_into_a_busy_bucket_retries_in_the_next_one()
    {
        long retries = Kmalloc.GetNoLockStatistics().BucketRetries;
        var got = new List<nint>();
        LockHook.Callback = (lockClass, point) =>
        {
            if (lockClass is "barn_lock" or "list_lock")
                got.Add((nint)Kmalloc.AllocNoLock(64));
        };
        try
        {
            // Enough frees to overflow this thread's kmalloc-64 sheaf: the flush takes
            // barn_lock with the sheaf Busy, and the hook re-enters kmalloc-64 there.
            var objects = Enumerable.Range(0, 2000).Select(_ => (nint)Kmalloc.Alloc(64)).ToList();
            objects.ForEach(p => Kmalloc.Free((void*)p));
        }
        finally
        {
            LockHook.Callback = null;
        }
        Assert.True(Kmalloc.GetNoLockStatistics().BucketRetries > retries, "the hook never found its bucket busy");
        Assert.Contains(got, p => p != 0 && Kmalloc.UsableSize((void*)p) == 96);   // served by kmalloc-96
        got.Where(p => p != 0).ToList().ForEach(p => Kmalloc.FreeNoLock((void*)p));
        Kmalloc.DrainDeferredFrees();
    }

    [Fact]
    public void AllocNoLock_from_a_constructor_and_FreeNoLock_from_a_destructor_never_deadlock()
    {
        long built = 0, withBuffer = 0, freed = 0;
        using var cache = SlabCache.Create("nolock-lifecycle", 64, new SlabCacheOptions
        {
            Constructor = o =>
            {
                void* buffer = Kmalloc.AllocNoLock(32);   // null is allowed: the object copes
                *(nint*)o = (nint)buffer;
                Interlocked.Increment(ref built);
                if (buffer != null)
                    Interlocked.Increment(ref withBuffer);
                return true;
            },
            Destructor = o =>
            {
                // Inside the leaf-only region: a plain Free would take list_lock and be refused.
                if (*(nint*)o != 0)
                {
                    Kmalloc.FreeNoLock((void*)*(nint*)o);
                    Interlocked.Increment(ref freed);
                }
            },
        });
        var objects = Enumerable.Range(0, 3000).Select(_ => (nint)cache.Alloc()).ToList();
        objects.ForEach(p => cache.Free((void*)p));
        cache.Shrink();
        Kmalloc.DrainDeferredFrees();
        Assert.True(built > 0);
        Assert.True(withBuffer > 0, "AllocNoLock never succeeded from a constructor");
        Assert.Equal(withBuffer, freed);
        Assert.Equal(0, Kmalloc.GetNoLockStatistics().DeferredPending);
    }

    private sealed class FuzzCounts
    {
        public long NormalOps;
        public long NoLockAllocs;
        public long NoLockNulls;
        public long NoLockFrees;
    }

    [Fact]
    public void Fuzz_a_million_operations_with_reentry_at_every_lock_point()
    {
        const long Target = 1_000_000;
        nuint[] sizes = [8, 24, 64, 96, 128, 200, 256, 512, 1000, 2048, 4096];
        var before = Kmalloc.Caches.Select(c => c.GetStatistics().ActiveObjects).ToArray();
        NoLockStatistics start = Kmalloc.GetNoLockStatistics();
        var counts = new FuzzCounts();
        using var stop = new CancellationTokenSource();
        using var hookHeld = new ThreadLocal<List<(nint P, nuint Size)>>(() => [], trackAllValues: true);
        using var hookRng = new ThreadLocal<Random>(() => new Random(Environment.CurrentManagedThreadId));

        LockHook.Callback = (lockClass, point) =>
        {
            Random rng = hookRng.Value!;
            List<(nint P, nuint Size)> held = hookHeld.Value!;
            if (rng.Next(2) == 0)
                return;
            if (held.Count > 0 && rng.Next(2) == 0)
            {
                int i = rng.Next(held.Count);
                (nint p, nuint size) = held[i];
                held[i] = held[^1];
                held.RemoveAt(held.Count - 1);
                Verify((void*)p, size, SeedOf((void*)p, size));
                Kmalloc.FreeNoLock((void*)p);
                Interlocked.Increment(ref counts.NoLockFrees);
            }
            else
            {
                nuint size = sizes[rng.Next(sizes.Length)];
                void* p = Kmalloc.AllocNoLock(size);
                Interlocked.Increment(ref counts.NoLockAllocs);
                if (p == null)
                {
                    Interlocked.Increment(ref counts.NoLockNulls);
                    return;
                }
                Fill(p, size, SeedOf(p, size));
                held.Add(((nint)p, size));
            }
        };
        var workers = Enumerable.Range(0, 3).Select(w => BackgroundCall.Start(() =>
        {
            var rng = new Random(w);
            var live = new List<(nint P, nuint Size)>();
            while (!stop.IsCancellationRequested && Volatile.Read(ref counts.NormalOps) + Volatile.Read(ref counts.NoLockAllocs) + Volatile.Read(ref counts.NoLockFrees) < Target)
            {
                for (int i = 0; i < 256; i++)
                {
                    if (live.Count < 3000 && (live.Count == 0 || rng.Next(100) < 52))
                    {
                        nuint size = sizes[rng.Next(sizes.Length)];
                        void* p = Kmalloc.Alloc(size);
                        Fill(p, size, SeedOf(p, size));
                        live.Add(((nint)p, size));
                    }
                    else
                    {
                        int k = rng.Next(live.Count);
                        (nint p, nuint size) = live[k];
                        live[k] = live[^1];
                        live.RemoveAt(live.Count - 1);
                        Verify((void*)p, size, SeedOf((void*)p, size));
                        Kmalloc.Free((void*)p);
                    }
                }
                Interlocked.Add(ref counts.NormalOps, 256);
            }
            foreach ((nint p, nuint size) in live)
            {
                Verify((void*)p, size, SeedOf((void*)p, size));
                Kmalloc.Free((void*)p);
            }
        })).ToArray();
        try
        {
            Assert.All(workers, w => Assert.True(w.Join(TimeSpan.FromSeconds(300)), "a fuzz worker deadlocked"));
        }
        finally
        {
            LockHook.Callback = null;
            stop.Cancel();
        }

        // What the hooks still hold goes back through the plain Free.
        foreach (List<(nint P, nuint Size)> held in hookHeld.Values)
        {
            foreach ((nint p, nuint size) in held)
            {
                Verify((void*)p, size, SeedOf((void*)p, size));
                Kmalloc.Free((void*)p);
            }
        }
        Kmalloc.DrainDeferredFrees();
        NoLockStatistics end = Kmalloc.GetNoLockStatistics();
        Assert.Equal(0, end.DeferredPending);
        Assert.Equal(start.DeferredFailures, end.DeferredFailures);
        long total = counts.NormalOps + counts.NoLockAllocs + counts.NoLockFrees;
        Assert.True(total >= Target, $"{total} operations");
        Assert.True(counts.NoLockAllocs > 1000, $"the hook re-entered only {counts.NoLockAllocs} times");

        foreach (SlabCache c in Kmalloc.Caches)
            c.Shrink();
        for (int i = 0; i < Kmalloc.Caches.Count; i++)
        {
            SlabCacheStatistics s = Kmalloc.Caches[i].GetStatistics();
            Assert.Equal(before[i], s.ActiveObjects);
            if (s.ActiveObjects == 0)
                Assert.Equal(0, s.Slabs);
        }
        output.WriteLine($"operations {total:N0}: normal {counts.NormalOps:N0}, AllocNoLock {counts.NoLockAllocs:N0} "
            + $"(null {counts.NoLockNulls:N0} = {100.0 * counts.NoLockNulls / counts.NoLockAllocs:F2}%, "
            + $"retried in the next bucket {end.BucketRetries - start.BucketRetries:N0}), FreeNoLock {counts.NoLockFrees:N0} "
            + $"(deferred {end.FreesDeferred - start.FreesDeferred:N0}), reserve slabs {end.ReserveSlabs - start.ReserveSlabs:N0}");
    }
}
