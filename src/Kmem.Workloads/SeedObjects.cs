using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Workloads;

/// <summary>mm_struct's per-CPU concurrency id (struct mm_cid).</summary>
public struct MmCid
{
    public int Cid;
    public int RecentCid;
    public long Time;
}

/// <summary>mm_struct's rss_stat[NR_MM_COUNTERS]: file, anon, swap, shmem pages.</summary>
[InlineArray(MmLike.Counters)]
public struct RssStat
{
    private PerCpuCounter _first;
}

/// <summary>
/// An mm_struct stand-in of 1 KiB: a body that mm_init clears, then (after the seed's
/// <c>ctor_fields_offset</c>) the fields a slab constructor may keep: four per-CPU rss
/// counters sharing one area (InitMany) with their node on the global counter list, and
/// the per-CPU mm_cid area. The same counters
/// as atomic fields serve the no-percpu mode.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct MmLike
{
    public const int Counters = 4;
    public const int BodyBytes = 1024 - 64 - 16 - 8 - 32;

    public fixed byte Body[BodyBytes];
    // ctor_fields_offset: nothing below is cleared by mm_init.
    public RssStat Rss;
    /// <summary>
    /// The rss counters' place on the global percpu_counters list (the kernel keeps a
    /// list_head in every percpu_counter for CPU hotplug, and percpu_counter_init_many
    /// links them all under percpu_counters_lock); one node for the four here.
    /// </summary>
    public MmLike* CountersNext;
    public MmLike* CountersPrev;
    public PerCpuPtr<MmCid> Cid;
    public fixed long PlainRss[Counters];
}

/// <summary>gnet_stats_basic_sync: bytes and packets.</summary>
public struct BasicStats
{
    public long Bytes;
    public long Packets;
}

/// <summary>gnet_stats_queue.</summary>
public struct QueueStats
{
    public int Qlen;
    public int Backlog;
    public int Drops;
    public int Requeues;
    public int Overlimits;
}

/// <summary>
/// A tc_action stand-in: a zeroed body and three per-CPU statistics areas (cpu_bstats,
/// cpu_bstats_hw, cpu_qstats); the same statistics as plain fields for no-percpu.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct TcLike
{
    public const int BodyBytes = 200;

    public fixed byte Body[BodyBytes];
    public PerCpuPtr<BasicStats> Bstats;
    public PerCpuPtr<BasicStats> BstatsHw;
    public PerCpuPtr<QueueStats> Qstats;
    public BasicStats PlainBstats;
    public BasicStats PlainBstatsHw;
    public QueueStats PlainQstats;
}
