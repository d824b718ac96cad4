using Kmem.Samples;

namespace Kmem.Tests;

/// <summary>
/// The sample's lock-free table over a TypesafeByRcu cache, tortured: readers look up with
/// no lock while a writer replaces, removes and clears entries (freeing them at once) and
/// shrinks the cache, and a scribbler fills every block it can get from the page layer
/// with garbage. A slab returned before its grace period would reach the scribbler while
/// a reader still held an entry in it, and the reader would see a broken magic or seal.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class RcuLookupTableTests
{
    private const int KeySpace = 4096;

    [Fact]
    public void Readers_never_see_memory_that_is_not_an_entry_while_writers_free_and_reuse()
    {
        var table = new RcuLookupTable(capacity: 1024, name: "rcu-table-test");
        using var scribbleCache = SlabCache.Create("rcu-table-scribbler", sizeof(Entry), TestOptions.Unmerged);
        using var stop = new CancellationTokenSource();
        var threads = new List<BackgroundCall>();
        for (int r = 0; r < 2; r++)
        {
            int seed = r;
            threads.Add(BackgroundCall.Start(() =>
            {
                var rng = new Random(seed);
                while (!stop.IsCancellationRequested)
                {
                    long key = rng.Next(1, KeySpace);
                    if (table.TryGet(key, out long value))
                        Assert.NotEqual(0, value);
                }
            }));
        }
        long shrinks = 0;
        threads.Add(BackgroundCall.Start(() =>
        {
            var rng = new Random(7);
            for (long n = 0; !stop.IsCancellationRequested; n++)
            {
                long key = rng.Next(1, KeySpace);
                if ((n & 3) == 0)
                    table.Remove(key);
                else
                    table.Set(key, rng.NextInt64(1, long.MaxValue));
                if ((n & 4095) == 4095)
                {
                    table.Clear();
                    if ((n & 16383) == 16383)
                    {
                        table.Cache.Shrink();
                        shrinks++;
                    }
                }
            }
        }));
        threads.Add(BackgroundCall.Start(() =>
        {
            var objects = new nint[4000];
            while (!stop.IsCancellationRequested)
            {
                for (int i = 0; i < objects.Length; i++)
                {
                    objects[i] = (nint)scribbleCache.Alloc();
                    new Span<byte>((void*)objects[i], sizeof(Entry)).Fill(0xA5);
                }
                foreach (nint p in objects)
                    scribbleCache.Free((void*)p);
                scribbleCache.Shrink();
            }
        }));

        var clock = System.Diagnostics.Stopwatch.StartNew();
        while ((table.Lookups < 1_000_000 || Volatile.Read(ref shrinks) < 3) && clock.Elapsed < TimeSpan.FromSeconds(60))
            Thread.Sleep(20);
        stop.Cancel();
        Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromSeconds(30))));

        SlabCacheStatistics s = table.Cache.GetStatistics();
        Assert.Equal(0, table.Errors);
        Assert.True(table.Lookups >= 1_000_000, $"{table.Lookups} lookups");
        Assert.True(table.Hits > 0);
        Assert.True(s.SlabsAllocated > s.Slabs, "no slab went back to the page layer: memory never turned over");
        table.Dispose();
        Assert.Equal(s.ConstructedObjects, table.Cache.GetStatistics().DestructorCalls);
    }
}
