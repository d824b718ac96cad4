using System.Runtime.InteropServices;
using Kmem.Locking;

namespace Kmem.Workloads;

/// <summary>One run of <see cref="SeedWorkload"/>: a workload in a mode at a thread count.</summary>
/// <param name="Workload">"mm" or "tc".</param>
/// <param name="Mode">"baseline", "ctor-dtor", "no-percpu" or "percpu-cache".</param>
/// <param name="OpsPerSecond">Object lifetimes (alloc, init, use, teardown, free) per second, all threads.</param>
/// <param name="Lifetimes">Lifetimes over the run, warm-up included (the denominator below).</param>
/// <param name="AllocMutexAcquisitions">pcpu_alloc_mutex acquisitions over the run, warm-up and cold start included.</param>
/// <param name="CountersLockAcquisitions">percpu_counters_lock acquisitions over the run (the second global lock of percpu_counter_init_many and percpu_counter_destroy_many): mm-like 2 per lifetime in the baseline.</param>
/// <param name="AllocMutexContended">Of those, acquisitions that found the mutex held.</param>
/// <param name="CheckFailures">Counters not back to zero at teardown, or group usage left after the run (must be 0).</param>
/// <param name="Locks">Every lock of the run: the per-CPU allocator's, the cache's, the alternative's.</param>
public sealed record SeedRunResult(
    string Workload, string Mode, int Threads, double OpsPerSecond, long Lifetimes,
    long AllocMutexAcquisitions, long AllocMutexContended, long CheckFailures,
    IReadOnlyList<LockStatistics> Locks, double Seconds, long CountersLockAcquisitions = 0)
{
    public double AllocMutexAcquisitionsPerLifetime => Lifetimes == 0 ? 0 : (double)AllocMutexAcquisitions / Lifetimes;

    /// <summary>percpu_counters_lock acquisitions per lifetime (mm-like only: the rss counters' list).</summary>
    public double CountersLockAcquisitionsPerLifetime => Lifetimes == 0 ? 0 : (double)CountersLockAcquisitions / Lifetimes;
}

/// <summary>
/// The seed series' two users (cover letter, patches 4 and 7), each object's lifetime
/// as the kernel lives it, in four modes:
/// <list type="bullet">
/// <item>baseline: per-CPU memory allocated and freed in every lifetime (before the series): mm 2, tc 3 pcpu_alloc_mutex acquisitions, and for mm 2 of percpu_counters_lock (init and destroy of the rss counters);</item>
/// <item>ctor-dtor: allocated by the slab constructor, freed by the destructor; mm's rss counters charged and uncharged per lifetime (patches 5-7);</item>
/// <item>no-percpu: the same object with its counters and statistics as atomic fields (the floor);</item>
/// <item>percpu-cache: the thread's alternative, a caching per-CPU allocator (<see cref="PerCpuAreaCache"/>).</item>
/// </list>
/// Every run has its own <see cref="PerCpuAllocator"/>, so its pcpu_alloc_mutex counts that run alone.
/// </summary>
public static unsafe class SeedWorkload
{
    public static readonly string[] Workloads = ["mm", "tc"];
    public static readonly string[] Modes = ["baseline", "ctor-dtor", "no-percpu", "percpu-cache"];

    /// <summary>Objects each thread holds at once: a few processes or filters alive together.</summary>
    private const int Burst = 8;

    public static SeedRunResult Run(string workload, string mode, int threads, TimeSpan duration, TimeSpan warmup)
    {
        if (!Workloads.Contains(workload))
            throw new ArgumentException($"unknown workload '{workload}'", nameof(workload));
        if (!Modes.Contains(mode))
            throw new ArgumentException($"unknown mode '{mode}'", nameof(mode));
        using var run = new SeedRun(workload, mode, threads);
        long lifetimes = run.Measure(threads, warmup, out _);
        long measured = run.Measure(threads, duration, out double seconds);
        lifetimes += measured;
        PerCpuStatistics pcpu = run.Allocator.GetStatistics();
        IReadOnlyList<LockStatistics> locks = run.LockStatistics();
        run.Finish();
        return new SeedRunResult(workload, mode, threads, measured / seconds, lifetimes,
            pcpu.AllocMutex.Acquired, pcpu.AllocMutex.Contended, run.CheckFailures, locks, seconds, run.CountersLock.Acquired);
    }

    /// <summary>The state of one run: its allocator, cache, memory group and the lifetime it runs.</summary>
    private sealed class SeedRun : IDisposable
    {
        private readonly bool _mm;
        private readonly string _mode;
        private readonly SlabCache _cache;
        private readonly PerCpuAreaCache? _areas;
        private readonly MemoryGroup? _group;
        private long _checkFailures;
        /// <summary>The global percpu_counters list, under <see cref="CountersLock"/>.</summary>
        private MmLike* _countersList;

        public SeedRun(string workload, string mode, int threads)
        {
            _mm = workload == "mm";
            _mode = mode;
            Allocator = new PerCpuAllocator($"percpu-{workload}-{mode}-{threads}");
            if (mode == "percpu-cache")
                _areas = new PerCpuAreaCache(Allocator);
            // mm_struct is SLAB_ACCOUNT and exec charges it to the task's memory cgroup; tc_action is not accounted.
            if (_mm)
                _group = MemoryGroup.Root.CreateChild($"seed-{workload}-{mode}-{threads}");
            var options = new SlabCacheOptions
            {
                Flags = SlabFlags.NoMerge | SlabFlags.HwCacheAlign | (_mm ? SlabFlags.Account : SlabFlags.None),
            };
            if (mode == "ctor-dtor")
            {
                options = _mm
                    ? options with { Constructor = o => MmConstruct((MmLike*)o), Destructor = o => MmDestruct((MmLike*)o) }
                    : options with { Constructor = o => TcConstruct((TcLike*)o), Destructor = o => TcDestruct((TcLike*)o) };
            }
            _cache = SlabCache.Create($"{(_mm ? "mm_struct" : "tc_action")}-{mode}", _mm ? sizeof(MmLike) : sizeof(TcLike), options);
        }

        public PerCpuAllocator Allocator { get; }

        /// <summary>
        /// percpu_counters_lock: the kernel's spinlock over the global list of per-CPU
        /// counters, taken by percpu_counter_init_many and percpu_counter_destroy_many (the
        /// thread's second global serialization point). A leaf: a destructor may take it.
        /// One per run, so its count is the run's alone.
        /// </summary>
        public LeafSpinLock CountersLock { get; } = new("percpu_counters_lock");

        public long CheckFailures => Interlocked.Read(ref _checkFailures);

        public long Measure(int threads, TimeSpan duration, out double seconds)
        {
            (long lifetimes, seconds) = TimedThreads.Run(threads, duration, stop =>
            {
                using MemoryGroup.EnterScope? scope = _group?.Enter();
                var held = stackalloc nint[Burst];
                long n = 0;
                while (!stop.Requested)
                {
                    for (int i = 0; i < Burst; i++)
                        held[i] = _mm ? (nint)MmCreate() : (nint)TcCreate();
                    for (int i = 0; i < Burst; i++)
                    {
                        if (_mm)
                            MmUse((MmLike*)held[i], i);
                        else
                            TcUse((TcLike*)held[i], i);
                    }
                    for (int i = 0; i < Burst; i++)
                    {
                        if (_mm)
                            MmDrop((MmLike*)held[i]);
                        else
                            TcDrop((TcLike*)held[i]);
                    }
                    n += Burst;
                }
                return n;
            });
            return lifetimes;
        }

        public List<LockStatistics> LockStatistics()
        {
            var locks = new List<LockStatistics> { Allocator.AllocMutex.GetStatistics(), Allocator.AreaLock.GetStatistics(), CountersLock.GetStatistics() };
            locks.AddRange(_cache.GetLockStatistics());
            if (_areas != null)
                locks.AddRange(_areas.GetLockStatistics());
            return locks;
        }

        /// <summary>Frees every slab (destructors run here for ctor-dtor) and checks the group is back to zero.</summary>
        public void Finish()
        {
            _cache.Shrink();
            if (_group != null && _group.Usage != 0)
                Interlocked.Increment(ref _checkFailures);
            // Every thread has joined and every destructor has run: a counter still on the
            // global list is an init without its destroy. Read without the lock, so the
            // check adds no acquisition to the run's count.
            if (_countersList != null)
                Interlocked.Increment(ref _checkFailures);
        }

        public void Dispose()
        {
            _cache.Dispose();
            _areas?.Dispose();
            _group?.Dispose();
            Allocator.Balance();
            Allocator.Dispose();
        }

        private void Fail() => Interlocked.Increment(ref _checkFailures);

        // ---- mm: mm_alloc/mm_init, the process's life, __mmdrop ----

        private bool MmConstruct(MmLike* mm)
        {
            if (!Allocator.TryAlloc(sizeof(MmCid), 8, out PerCpuPtr<byte> cid))
                return false;
            mm->Cid = cid.Cast<MmCid>();
            try
            {
                PerCpuCounter.InitMany(mm->Rss, 0, Allocator);
            }
            catch (SlabAllocationException)
            {
                Allocator.Free(mm->Cid);
                return false;
            }
            ListCounters(mm);
            return true;
        }

        private void MmDestruct(MmLike* mm)
        {
            Allocator.Free(mm->Cid);
            UnlistCounters(mm);
            PerCpuCounter.DestroyMany(mm->Rss);
        }

        /// <summary>percpu_counter_init_many's second half: the counters go on the global list, under percpu_counters_lock.</summary>
        private void ListCounters(MmLike* mm)
        {
            using (CountersLock.Scope())
            {
                mm->CountersPrev = null;
                mm->CountersNext = _countersList;
                if (_countersList != null)
                    _countersList->CountersPrev = mm;
                _countersList = mm;
            }
        }

        /// <summary>percpu_counter_destroy_many's first half: off the global list, under percpu_counters_lock.</summary>
        private void UnlistCounters(MmLike* mm)
        {
            using (CountersLock.Scope())
            {
                if (mm->CountersPrev != null)
                    mm->CountersPrev->CountersNext = mm->CountersNext;
                else
                    _countersList = mm->CountersNext;
                if (mm->CountersNext != null)
                    mm->CountersNext->CountersPrev = mm->CountersPrev;
                mm->CountersNext = mm->CountersPrev = null;
            }
        }

        private MmLike* MmCreate()
        {
            var mm = (MmLike*)_cache.Alloc();
            // mm_alloc's memset: the whole struct before the series, up to ctor_fields_offset with it.
            NativeMemory.Clear(mm->Body, MmLike.BodyBytes);
            switch (_mode)
            {
                case "baseline":
                    mm->Cid = Allocator.Alloc<MmCid>();
                    PerCpuCounter.InitMany(mm->Rss, 0, Allocator, account: true);
                    ListCounters(mm);
                    break;
                case "ctor-dtor":
                    if (!PerCpuCounter.ChargeMany(mm->Rss))
                        throw new SlabAllocationException("mm rss_stat charge refused");
                    break;
                case "percpu-cache":
                    mm->Cid = _areas!.Alloc<MmCid>();
                    PerCpuCounter.InitManyOver(mm->Rss, _areas.Alloc<int>(MmLike.Counters));
                    ListCounters(mm);   // caching the areas does not take the counters off the list
                    if (!MemoryGroup.Current!.TryCharge(RssChargeBytes))
                        throw new SlabAllocationException("mm rss_stat charge refused");
                    break;
                default:
                    for (int i = 0; i < MmLike.Counters; i++)
                        mm->PlainRss[i] = 0;
                    break;
            }
            if (_mode != "no-percpu")
            {
                // mm_init_cid: every possible CPU's cid starts unset.
                foreach (ref MmCid c in mm->Cid)
                {
                    c.Cid = -1;
                    c.RecentCid = -1;
                    c.Time = 0;
                }
            }
            return mm;
        }

        private static long RssChargeBytes => (long)MmLike.Counters * sizeof(int) * CpuTopology.PossibleCpus;

        /// <summary>The process runs: pages mapped and counted (the count kept in the body, as mm's map_count is), its CPU's cid used.</summary>
        private void MmUse(MmLike* mm, int seed)
        {
            long* mapped = (long*)mm->Body;
            for (int i = 0; i < MmLike.Counters; i++)
            {
                long pages = seed + i + 1;
                mapped[i] = pages;
                if (_mode == "no-percpu")
                    Interlocked.Add(ref mm->PlainRss[i], pages);
                else
                    mm->Rss[i].Add(pages);
            }
            if (_mode != "no-percpu")
                mm->Cid.Local.Time++;
        }

        /// <summary>exit_mmap unmaps every page, check_mm finds each counter at zero (an exact sum), __mmdrop frees.</summary>
        private void MmDrop(MmLike* mm)
        {
            long* mapped = (long*)mm->Body;
            for (int i = 0; i < MmLike.Counters; i++)
            {
                bool zero;
                if (_mode == "no-percpu")
                {
                    zero = Interlocked.Add(ref mm->PlainRss[i], -mapped[i]) == 0;
                }
                else
                {
                    mm->Rss[i].Add(-mapped[i]);
                    zero = mm->Rss[i].Sum() == 0;
                }
                if (!zero)
                    Fail();
            }
            switch (_mode)
            {
                case "baseline":
                    Allocator.Free(mm->Cid);
                    UnlistCounters(mm);
                    PerCpuCounter.DestroyMany(mm->Rss);
                    break;
                case "ctor-dtor":
                    PerCpuCounter.UnchargeMany(mm->Rss);
                    break;
                case "percpu-cache":
                    UnlistCounters(mm);
                    _areas!.Free(mm->Cid);
                    _areas.Free(PerCpuCounter.DetachMany(mm->Rss), MmLike.Counters);
                    MemoryGroup.Current!.Uncharge(RssChargeBytes);
                    break;
            }
            _cache.Free(mm);
        }

        // ---- tc: tcf_idr_create, packets through the action, free_tcf ----

        private bool TcConstruct(TcLike* tc)
        {
            if (!Allocator.TryAlloc(sizeof(BasicStats), 8, out PerCpuPtr<byte> b))
                return false;
            if (!Allocator.TryAlloc(sizeof(BasicStats), 8, out PerCpuPtr<byte> hw))
            {
                Allocator.Free(b);
                return false;
            }
            if (!Allocator.TryAlloc(sizeof(QueueStats), 4, out PerCpuPtr<byte> q))
            {
                Allocator.Free(hw);
                Allocator.Free(b);
                return false;
            }
            tc->Bstats = b.Cast<BasicStats>();
            tc->BstatsHw = hw.Cast<BasicStats>();
            tc->Qstats = q.Cast<QueueStats>();
            return true;
        }

        private void TcDestruct(TcLike* tc)
        {
            Allocator.Free(tc->Bstats);
            Allocator.Free(tc->BstatsHw);
            Allocator.Free(tc->Qstats);
        }

        private TcLike* TcCreate()
        {
            var tc = (TcLike*)_cache.Alloc();
            NativeMemory.Clear(tc->Body, TcLike.BodyBytes);   // kzalloc
            switch (_mode)
            {
                case "baseline":
                    tc->Bstats = Allocator.Alloc<BasicStats>();
                    tc->BstatsHw = Allocator.Alloc<BasicStats>();
                    tc->Qstats = Allocator.Alloc<QueueStats>();
                    break;
                case "ctor-dtor":
                    // A new action's statistics start at zero: the kept areas are cleared, not reallocated.
                    foreach (ref BasicStats s in tc->Bstats)
                        s = default;
                    foreach (ref BasicStats s in tc->BstatsHw)
                        s = default;
                    foreach (ref QueueStats s in tc->Qstats)
                        s = default;
                    break;
                case "percpu-cache":
                    tc->Bstats = _areas!.Alloc<BasicStats>();
                    tc->BstatsHw = _areas.Alloc<BasicStats>();
                    tc->Qstats = _areas.Alloc<QueueStats>();
                    break;
                default:
                    tc->PlainBstats = default;
                    tc->PlainBstatsHw = default;
                    tc->PlainQstats = default;
                    break;
            }
            return tc;
        }

        /// <summary>Packets through the action: its CPU's statistics counted.</summary>
        private void TcUse(TcLike* tc, int seed)
        {
            long bytes = 64 + seed * 100;
            if (_mode == "no-percpu")
            {
                Interlocked.Add(ref tc->PlainBstats.Bytes, bytes);
                Interlocked.Increment(ref tc->PlainBstats.Packets);
                Interlocked.Add(ref tc->PlainBstatsHw.Bytes, bytes);
                Interlocked.Increment(ref tc->PlainBstatsHw.Packets);
                Interlocked.Increment(ref tc->PlainQstats.Requeues);
                return;
            }
            ref BasicStats b = ref tc->Bstats.Local;
            Interlocked.Add(ref b.Bytes, bytes);
            Interlocked.Increment(ref b.Packets);
            ref BasicStats hw = ref tc->BstatsHw.Local;
            Interlocked.Add(ref hw.Bytes, bytes);
            Interlocked.Increment(ref hw.Packets);
            Interlocked.Increment(ref tc->Qstats.Local.Requeues);
        }

        /// <summary>The filter is dumped (statistics summed over CPUs), then deleted.</summary>
        private void TcDrop(TcLike* tc)
        {
            long packets = 0;
            if (_mode == "no-percpu")
            {
                packets = tc->PlainBstats.Packets + tc->PlainBstatsHw.Packets + tc->PlainQstats.Requeues;
            }
            else
            {
                foreach (ref BasicStats s in tc->Bstats)
                    packets += Volatile.Read(ref s.Packets);
                foreach (ref BasicStats s in tc->BstatsHw)
                    packets += Volatile.Read(ref s.Packets);
                foreach (ref QueueStats s in tc->Qstats)
                    packets += Volatile.Read(ref s.Requeues);
            }
            if (packets != 3)
                Fail();
            switch (_mode)
            {
                case "baseline":
                    Allocator.Free(tc->Bstats);
                    Allocator.Free(tc->BstatsHw);
                    Allocator.Free(tc->Qstats);
                    break;
                case "percpu-cache":
                    _areas!.Free(tc->Bstats);
                    _areas.Free(tc->BstatsHw);
                    _areas.Free(tc->Qstats);
                    break;
            }
            _cache.Free(tc);
        }
    }
}
