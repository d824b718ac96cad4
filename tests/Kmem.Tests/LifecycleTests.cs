using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Kmem.Locking;

namespace Kmem.Tests;

/// <summary>
/// Records what a cache's constructor and destructor did: the set of objects constructed
/// and not yet destructed (with the native buffer each owns), and the threads destructors ran on.
/// </summary>
internal sealed unsafe class LifecycleTracker
{
    public readonly ConcurrentDictionary<nint, nint> Live = new();
    public readonly ConcurrentDictionary<int, string> DestructorThreads = new();
    /// <summary>Threads that destructed an object whose buffer counted a use (an object that was handed out).</summary>
    public readonly ConcurrentDictionary<int, bool> UsedObjectDestructorThreads = new();
    public long Constructed;
    public long Destructed;
    public long DestructedUnknown;
    public Func<long, bool> FailWhen = _ => false;
    private long _calls;

    /// <summary>The expensive state: a 64-byte native buffer whose address is kept in the object's first word.</summary>
    public bool Construct(void* obj)
    {
        long call = Interlocked.Increment(ref _calls);
        if (FailWhen(call))
            return false;
        nint buffer = (nint)NativeMemory.Alloc(64);
        *(nint*)obj = buffer;
        *(long*)buffer = 0;
        Assert.True(Live.TryAdd((nint)obj, buffer), "an object was constructed twice without a destructor between");
        Interlocked.Increment(ref Constructed);
        return true;
    }

    public void Destruct(void* obj)
    {
        DestructorThreads.TryAdd(Environment.CurrentManagedThreadId, Thread.CurrentThread.Name ?? "");
        if (!Live.TryRemove((nint)obj, out nint buffer) || *(nint*)obj != buffer)
        {
            Interlocked.Increment(ref DestructedUnknown);
            return;
        }
        if (*(long*)buffer != 0)
            UsedObjectDestructorThreads.TryAdd(Environment.CurrentManagedThreadId, true);
        NativeMemory.Free((void*)buffer);
        Interlocked.Increment(ref Destructed);
    }

    public SlabCacheOptions Options(int minEmptySlabs = 2) => new()
    {
        Constructor = Construct,
        Destructor = Destruct,
        MinEmptySlabs = minEmptySlabs,
    };
}

public unsafe class LifecycleTests
{
    [Fact]
    public void Objects_keep_constructor_state_across_alloc_free_cycles()
    {
        var t = new LifecycleTracker();
        using var cache = SlabCache.Create("keeps-state", 48, t.Options());
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        var buffers = new Dictionary<nint, nint>();
        for (int round = 0; round < 5; round++)
        {
            var objects = new List<nint>();
            for (int i = 0; i < perSlab; i++)
            {
                var o = (nint*)cache.Alloc();
                Assert.True(t.Live.TryGetValue((nint)o, out nint buffer), "Alloc returned an object that was never constructed");
                Assert.Equal(buffer, o[0]);
                if (buffers.TryGetValue((nint)o, out nint seen))
                {
                    Assert.Equal(seen, o[0]);
                    Assert.Equal(round, *(long*)o[0]);   // what the last user left
                }
                buffers[(nint)o] = o[0];
                *(long*)o[0] = round + 1;
                objects.Add((nint)o);
            }
            foreach (nint o in objects)
                cache.Free((void*)o);
        }
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(s.Slabs * perSlab, s.ConstructorCalls);   // once per object per slab, not per Alloc
        Assert.Equal(0, s.DestructorCalls);
        Assert.Equal(s.TotalObjects, s.ConstructedFreeObjects);
        cache.Dispose();
        Assert.Equal(t.Constructed, t.Destructed);
        Assert.Empty(t.Live);
        Assert.Equal(0, t.DestructedUnknown);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(24)]
    [InlineData(100)]
    public void The_free_list_link_never_overwrites_object_bytes(int size)
    {
        using var cache = SlabCache.Create($"link-outside-{size}", size, new SlabCacheOptions
        {
            Constructor = o => { new Span<byte>(o, size).Fill(0xA5); return true; },
            Destructor = o => { },
        });
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        // Enough objects that frees go past the sheaf and barn back onto slab free lists.
        int n = perSlab * 6;
        for (int round = 0; round < 3; round++)
        {
            var objects = new List<nint>();
            for (int i = 0; i < n; i++)
            {
                void* o = cache.Alloc();
                Assert.True(new ReadOnlySpan<byte>(o, size).IndexOfAnyExcept((byte)0xA5) < 0, $"object bytes changed while free (round {round})");
                objects.Add((nint)o);
            }
            foreach (nint o in objects)
                cache.Free((void*)o);
        }
    }

    [Fact]
    public void A_failing_constructor_fails_the_allocation_after_destructing_what_was_built()
    {
        var t = new LifecycleTracker();
        using var cache = SlabCache.Create("ctor-fails", 64, t.Options());
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        t.FailWhen = call => call == perSlab / 2;
        Assert.False(cache.TryAlloc(out void* none));
        Assert.True(none == null);
        t.FailWhen = call => call == perSlab / 2 + 3;   // the third object of the next slab
        var e = Assert.Throws<SlabAllocationException>(() => cache.Alloc());
        Assert.Equal(AllocationFailure.ConstructorFailed, e.Reason);
        Assert.Contains("ctor-fails", e.Message, StringComparison.Ordinal);
        Assert.Contains("constructor failed", e.Message, StringComparison.Ordinal);

        // Rolled back before the calls returned: nothing held, nothing left for reclaim,
        // and the destructors ran in the failing thread, as the kernel's error path does.
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(0, s.Slabs);
        Assert.Equal(0, s.BytesHeld);
        Assert.Equal(2, s.ConstructorFailures);
        Assert.Equal(s.ConstructorCalls - s.ConstructorFailures, s.DestructorCalls);
        Assert.Equal(t.Constructed, t.Destructed);
        Assert.Empty(t.Live);
        Assert.Equal([Environment.CurrentManagedThreadId], t.DestructorThreads.Keys);

        // The cache works once the constructor does.
        t.FailWhen = _ => false;
        void* p = cache.Alloc();
        cache.Free(p);
    }

    [Fact]
    public void A_throwing_constructor_propagates_and_rolls_back()
    {
        var t = new LifecycleTracker();
        int calls = 0;
        using var cache = SlabCache.Create("ctor-throws", 64, new SlabCacheOptions
        {
            Constructor = o => ++calls < 5 ? t.Construct(o) : throw new InvalidDataException("no more"),
            Destructor = t.Destruct,
        });
        Assert.Throws<InvalidDataException>(() => cache.TryAlloc(out _));
        Assert.Equal(4, t.Destructed);
        Assert.Empty(t.Live);
        Assert.Equal(1, cache.GetStatistics().ConstructorFailures);
    }

    [Fact]
    public void Batch_constructor_reports_how_many_it_built_and_only_those_are_destructed()
    {
        var built = new List<nint>();   // a list: a later slab may reuse the same block, so the same addresses
        var destructed = new List<nint>();
        int batchCalls = 0;
        bool fail = true;
        using var cache = SlabCache.Create("batch", 32, new SlabCacheOptions
        {
            BatchConstructor = objects =>
            {
                batchCalls++;
                int n = fail ? objects.Length / 3 : objects.Length;
                for (int i = 0; i < n; i++)
                    built.Add(objects[i]);
                return n;
            },
            BatchDestructor = objects =>
            {
                lock (destructed)
                    destructed.AddRange(objects.ToArray());
            },
        });
        Assert.False(cache.TryAlloc(out _));
        Assert.True(Reclaim.RunPass());
        lock (destructed)
            Assert.Equal(built.Order(), destructed.Order());
        fail = false;
        void* p = cache.Alloc();
        cache.Free(p);
        cache.Dispose();
        Assert.Equal(2, batchCalls);
        lock (destructed)
            Assert.Equal(built.Order(), destructed.Order());   // each built object destructed exactly once
    }

    [Fact]
    public void Constructors_run_in_free_list_order_also_when_it_is_randomised()
    {
        var order = new List<nint>();
        using var cache = SlabCache.Create("random-order", 64, new SlabCacheOptions
        {
            Flags = SlabFlags.RandomizeFreelist,
            Constructor = o => { order.Add((nint)o); return true; },
        });
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        var handedOut = new List<nint>();
        for (int i = 0; i < perSlab; i++)
            handedOut.Add((nint)cache.Alloc());
        Assert.Equal(handedOut, order);                     // allocation follows the free list
        Assert.NotEqual(handedOut.Order(), handedOut);       // which is not address order
        foreach (nint p in handedOut)
            cache.Free((void*)p);
    }

    [Theory]
    [InlineData("1%")]
    [InlineData("10%")]
    [InlineData("last object of a slab")]
    public void Constructor_faults_under_threads_balance_exactly_and_only_rollbacks_destruct_on_application_threads(string fault)
    {
        var t = new LifecycleTracker();
        using var cache = SlabCache.Create($"ctor-faults-{fault}", 64, t.Options(minEmptySlabs: 1));
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        t.FailWhen = fault switch
        {
            "1%" => _ => Random.Shared.Next(100) == 0,
            "10%" => _ => Random.Shared.Next(10) == 0,
            _ => call => call % perSlab == 0 && call / perSlab % 2 == 1,
        };
        var appThreads = new ConcurrentDictionary<int, bool>();
        var errors = new ConcurrentQueue<Exception>();
        long failures = 0;
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            try
            {
                appThreads[Environment.CurrentManagedThreadId] = true;
                var held = new List<nint>();
                var rng = new Random(Environment.CurrentManagedThreadId);
                for (int i = 0; i < 40_000; i++)
                {
                    if (held.Count < 2000 && rng.Next(3) != 0)
                    {
                        if (cache.TryAlloc(out void* p))
                        {
                            Assert.True(t.Live.ContainsKey((nint)p), "handed out an unconstructed object");
                            (*(long*)*(nint*)p)++;
                            held.Add((nint)p);
                        }
                        else
                        {
                            Interlocked.Increment(ref failures);
                        }
                    }
                    else if (held.Count > 0)
                    {
                        int k = rng.Next(held.Count);
                        cache.Free((void*)held[k]);
                        held[k] = held[^1];
                        held.RemoveAt(held.Count - 1);
                    }
                }
                foreach (nint p in held)
                    cache.Free((void*)p);
            }
            catch (Exception e)
            {
                errors.Enqueue(e);   // a worker's failure fails the test, not the test host
            }
        })).ToList();
        threads.ForEach(th => th.Start());
        threads.ForEach(th => th.Join());
        Assert.Empty(errors);

        SlabCacheStatistics before = cache.GetStatistics();
        Assert.Equal(0, before.ActiveObjects);
        Assert.True(failures > 0, "the constructor never failed");
        Assert.Equal(failures, before.ConstructorFailures);
        cache.Dispose();
        Assert.Equal(t.Constructed, t.Destructed);
        Assert.Empty(t.Live);
        Assert.Equal(0, t.DestructedUnknown);
        // Objects that were ever handed out are destructed by reclaim or Dispose, never in
        // an application's call; an application thread destructs only the objects of a
        // slab whose construction it saw fail (the rollback, before its TryAlloc returned).
        Assert.DoesNotContain(t.UsedObjectDestructorThreads.Keys, appThreads.ContainsKey);
        Assert.Contains(t.DestructorThreads.Keys, appThreads.ContainsKey);
    }

    [Fact]
    public void Empty_slabs_beyond_the_reserve_are_freed_by_the_reclaim_thread_not_by_Free()
    {
        var t = new LifecycleTracker();
        using var cache = SlabCache.Create("excess", 4000, t.Options(minEmptySlabs: 2));
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        var objects = new List<nint>();
        for (int i = 0; i < perSlab * 12; i++)
            objects.Add((nint)cache.Alloc());
        int me = Environment.CurrentManagedThreadId;
        foreach (nint p in objects)
            cache.Free((void*)p);
        Assert.DoesNotContain(me, t.DestructorThreads.Keys);
        Assert.True(Reclaim.RunPass());
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.True(s.EmptySlabs <= 2, $"{s.EmptySlabs} empty slabs kept");
        Assert.True(s.SlabsFreedByReclaim > 0);
        Assert.Equal(0, s.SlabsFreedByShrink);
        Assert.Equal(s.ConstructorCalls - s.DestructorCalls, s.TotalObjects);
        Assert.All(t.DestructorThreads.Values, name => Assert.StartsWith("kmem-reclaim", name));   // a worker (the first, or one that took over from a stuck one)
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
        Assert.True(cache.GetStatistics().SlabsFreedByShrink > 0);
    }

    [Fact]
    public void A_constructor_that_allocates_from_its_own_cache_gets_a_clear_error()
    {
        SlabCache? self = null;
        using var cache = SlabCache.Create("greedy-ctor", 64, new SlabCacheOptions
        {
            Constructor = o => self!.Alloc() != null,
        });
        self = cache;
        var e = Assert.Throws<LockValidationException>(() => cache.Alloc());
        Assert.Contains("greedy-ctor", e.Message, StringComparison.Ordinal);
        Assert.Contains("own constructor", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, cache.GetStatistics().ConstructorFailures);
    }

    [Fact]
    public void Options_with_both_single_and_batch_forms_are_refused()
    {
        Assert.Throws<ArgumentException>(() => SlabCache.Create("both-ctors", 8, new SlabCacheOptions { Constructor = _ => true, BatchConstructor = o => o.Length }));
        Assert.Throws<ArgumentException>(() => SlabCache.Create("both-dtors", 8, new SlabCacheOptions { Destructor = _ => { }, BatchDestructor = _ => { } }));
    }
}
