using System.Runtime.InteropServices;

namespace Kmem.Tests;

/// <summary>
/// After kernel/rcu/rcutorture.c: a writer replaces the one published object again and
/// again and retires the old one through pipeline stages, one per grace period, freeing
/// it at the last; readers hold the object inside a section and check, at its end, that
/// no more than one stage has passed (the first comes at removal) and that it was not
/// freed and reused under them. Any such sighting is a too-short grace period.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class RcuTortureTests
{
    private const long PipeLength = 3;   // stages: 1 at removal, +1 per grace period, freed at this
    private const long MinSections = 1_000_000;
    private const long MinRetired = 600;

    [StructLayout(LayoutKind.Sequential)]
    private struct TortureObject
    {
        public long Id;      // the free-list link of a plain cache overlays this word: reuse shows
        public long Check;   // Mix(Id)
        public long Pipe;
        public long Freed;
    }

    private static long Mix(long id) => unchecked(id * (long)0x9E3779B97F4A7C15UL) ^ 0x5bd1e995;

    private sealed class Torture(SlabCache<TortureObject> cache)
    {
        public nint Current;
        public long Sections;
        public long Nested;
        public long TooShort;
        public long Retired;
        public readonly long[] PipeSeen = new long[PipeLength + 2];
        public string? FirstError;
        public readonly SlabCache<TortureObject> Cache = cache;

        public void Advance(TortureObject* p)
        {
            long pipe = Volatile.Read(ref p->Pipe) + 1;
            Volatile.Write(ref p->Pipe, pipe);
            if (pipe < PipeLength)
                return;
            Volatile.Write(ref p->Freed, 1);
            Cache.Free(p);
            Interlocked.Increment(ref Retired);
        }

        /// <summary>Retires through callbacks: each stage after one grace period, on the callback thread.</summary>
        public void RetireByCall(TortureObject* p)
        {
            nint address = (nint)p;
            Rcu.Call(() => Step(address));
        }

        private void Step(nint address)
        {
            var p = (TortureObject*)address;
            Advance(p);
            if (Volatile.Read(ref p->Freed) == 0)
                Rcu.Call(() => Step(address));
        }
    }

    [Fact]
    public void A_million_reader_sections_see_no_too_short_grace_period()
    {
        using var cache = new SlabCache<TortureObject>("rcu-torture", TestOptions.Unmerged);
        var t = new Torture(cache);
        using var stop = new CancellationTokenSource();
        var readers = Enumerable.Range(0, 3).Select(r => new Thread(() => Read(t, r, stop.Token)) { IsBackground = true }).ToList();
        var writer = new Thread(() => Write(t, stop.Token)) { IsBackground = true };
        readers.ForEach(x => x.Start());
        writer.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while ((Volatile.Read(ref t.Sections) < MinSections || Volatile.Read(ref t.Retired) < MinRetired)
               && clock.Elapsed < TimeSpan.FromSeconds(90) && Volatile.Read(ref t.FirstError) == null)
            Thread.Sleep(20);
        stop.Cancel();
        Assert.True(writer.Join(TimeSpan.FromSeconds(30)));
        readers.ForEach(x => Assert.True(x.Join(TimeSpan.FromSeconds(30))));

        // The last published object, then every retirement still in flight.
        var last = (TortureObject*)t.Current;
        Rcu.Synchronize();
        cache.Free(last);
        Rcu.Barrier();
        Rcu.Barrier();   // chained stages queue their next one from a callback

        Assert.Null(t.FirstError);
        Assert.Equal(0, t.TooShort);
        Assert.True(t.Sections >= MinSections, $"only {t.Sections} reader sections in {clock.Elapsed}");
        Assert.True(t.Retired >= MinRetired, $"only {t.Retired} objects retired");
        Assert.True(t.Nested > 0);
        Assert.True(t.PipeSeen[1] > 0, "no reader ever held an object across its removal: the test did not test");
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    private static void Write(Torture t, CancellationToken stop)
    {
        var staged = new List<nint>();
        long id = 0;
        while (!stop.IsCancellationRequested)
        {
            TortureObject* p = t.Cache.Alloc();
            p->Id = ++id;
            p->Check = Mix(id);
            p->Pipe = 0;
            p->Freed = 0;
            var old = (TortureObject*)Interlocked.Exchange(ref t.Current, (nint)p);
            if (old == null)
                continue;
            Volatile.Write(ref old->Pipe, 1);
            switch (id % 3)
            {
                case 0:
                    // Synchronous stages: every staged object moves one stage per grace period.
                    staged.Add((nint)old);
                    Rcu.Synchronize();
                    foreach (nint s in staged)
                        t.Advance((TortureObject*)s);
                    staged.RemoveAll(s => ((TortureObject*)s)->Freed != 0);
                    break;
                case 1:
                    t.RetireByCall(old);
                    break;
                default:
                    // kfree_rcu: one grace period, then the memory is reused.
                    Interlocked.Increment(ref t.Retired);
                    Kmalloc.FreeRcu(old);
                    break;
            }
        }
        while (staged.Count > 0)
        {
            Rcu.Synchronize();
            foreach (nint s in staged)
                t.Advance((TortureObject*)s);
            staged.RemoveAll(s => ((TortureObject*)s)->Freed != 0);
        }
    }

    private static void Read(Torture t, int seed, CancellationToken stop)
    {
        var rng = new Random(seed);
        long sections = 0;
        while (!stop.IsCancellationRequested)
        {
            bool nest = (sections & 7) == 0;
            Rcu.ReadLock();
            if (nest)
                Rcu.ReadLock();
            var p = (TortureObject*)Volatile.Read(ref t.Current);
            if (p != null)
            {
                long id = Volatile.Read(ref p->Id);
                long check = Volatile.Read(ref p->Check);
                // Hold it a while; now and then give the CPU away inside the section, so
                // that the writer runs grace periods while we hold the object.
                if ((sections & 63) == 0)
                    Thread.Yield();
                else
                    Thread.SpinWait(rng.Next(20));
                long pipe = Volatile.Read(ref p->Pipe);
                long freed = Volatile.Read(ref p->Freed);
                long idAfter = Volatile.Read(ref p->Id);
                long checkAfter = Volatile.Read(ref p->Check);
                if (nest)
                    Rcu.ReadUnlock();
                Rcu.ReadUnlock();
                Interlocked.Increment(ref t.PipeSeen[Math.Min(pipe, PipeLength + 1)]);
                if (pipe > 1 || freed != 0 || idAfter != id || check != Mix(id) || checkAfter != check)
                {
                    Interlocked.Increment(ref t.TooShort);
                    Interlocked.CompareExchange(ref t.FirstError,
                        $"object {id} at 0x{(nint)p:x}: pipe {pipe}, freed {freed}, id now {idAfter}, check {check:x}/{checkAfter:x}", null);
                }
            }
            else
            {
                if (nest)
                    Rcu.ReadUnlock();
                Rcu.ReadUnlock();
            }
            if (nest)
                Interlocked.Increment(ref t.Nested);
            sections++;
            if ((sections & 1023) == 0)
                Interlocked.Add(ref t.Sections, 1024);
        }
        Interlocked.Add(ref t.Sections, sections & 1023);
    }
}
