using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem;

/// <summary>
/// A 64-bit counter that scales across CPUs (lib/percpu_counter.c): a shared count plus
/// a per-CPU 32-bit delta that is folded into the shared count once it reaches
/// <see cref="Batch"/>. <see cref="Add"/> touches this CPU's delta; <see cref="Read"/> is
/// the shared count alone (fast, off by less than Batch × CPUs); <see cref="Sum"/> adds
/// every delta (exact once no <see cref="Add"/> runs).
/// </summary>
/// <remarks>
/// <para>Unmanaged and 16 bytes, so it lives inside objects in slab memory. Work on it
/// in place (through a pointer, a ref or a span): a copy shares the per-CPU deltas but
/// not the shared count.</para>
/// <para>The kernel's delta update relies on preemption being off; a .NET thread can be
/// moved off its CPU mid-update, so the delta is updated with one atomic add on a
/// CPU-local cache line, and a fold swaps the delta out before adding it to the count.</para>
/// <para>Its per-CPU memory comes from a <see cref="PerCpuAllocator"/>: <see cref="InitMany"/>
/// gives several counters one area, as the kernel does for mm_struct's rss_stat, so
/// they cost one pcpu_alloc_mutex acquisition together.</para>
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct PerCpuCounter
{
    private long _count;
    private PerCpuPtr<int> _counters;

    /// <summary>Delta a CPU keeps before folding it in (percpu_counter_batch: max(32, 2 × CPUs)).</summary>
    public static int Batch { get; } = Math.Max(32, 2 * CpuTopology.PossibleCpus);

    /// <summary>Between Init/InitMany and Destroy.</summary>
    public readonly bool IsInitialized => !_counters.IsNull;

    /// <summary>The counter's per-CPU deltas (the area InitMany gave it).</summary>
    public readonly PerCpuPtr<int> Deltas => _counters;

    /// <summary>Initialises one counter to <paramref name="amount"/> (percpu_counter_init).</summary>
    public void Init(long amount = 0, PerCpuAllocator? allocator = null, bool account = false) =>
        InitMany(MemoryMarshal.CreateSpan(ref this, 1), amount, allocator, account);

    /// <summary>
    /// Initialises every counter of <paramref name="counters"/> to <paramref name="amount"/>
    /// with one per-CPU area for all (percpu_counter_init_many): one allocation, one
    /// pcpu_alloc_mutex acquisition.
    /// </summary>
    /// <exception cref="SlabAllocationException">No per-CPU memory, or (with <paramref name="account"/>) the group's limit.</exception>
    public static void InitMany(Span<PerCpuCounter> counters, long amount = 0, PerCpuAllocator? allocator = null, bool account = false)
    {
        if (counters.IsEmpty)
            throw new ArgumentException("no counters to initialise", nameof(counters));
        PerCpuPtr<int> area = (allocator ?? PerCpuAllocator.Shared).Alloc<int>(counters.Length, account);
        for (int i = 0; i < counters.Length; i++)
        {
            counters[i]._count = amount;
            counters[i]._counters = area.Offset(i);
        }
    }

    /// <summary>
    /// Initialises counters over a per-CPU area the caller owns and keeps (a cache of
    /// areas, say): at least <c>counters.Length</c> ints per CPU, each CPU's copy zeroed.
    /// Undo with <see cref="DetachMany"/>, not <see cref="DestroyMany"/>.
    /// </summary>
    public static void InitManyOver(Span<PerCpuCounter> counters, PerCpuPtr<int> area, long amount = 0)
    {
        if (area.IsNull)
            throw new ArgumentException("null per-CPU area", nameof(area));
        for (int i = 0; i < counters.Length; i++)
        {
            counters[i]._count = amount;
            counters[i]._counters = area.Offset(i);
        }
    }

    /// <summary>Detaches counters made by <see cref="InitManyOver"/> from their area, which it returns unfreed.</summary>
    public static PerCpuPtr<int> DetachMany(Span<PerCpuCounter> counters)
    {
        PerCpuPtr<int> area = FirstArea(counters);
        counters.Clear();
        return area;
    }

    /// <summary>Frees the per-CPU area of counters made by one <see cref="InitMany"/> (percpu_counter_destroy_many); they read 0 after.</summary>
    /// <exception cref="SlabUsageException">The span does not start with the first counter of an InitMany, or it was destroyed already.</exception>
    public static void DestroyMany(Span<PerCpuCounter> counters)
    {
        if (counters.IsEmpty || counters[0]._counters.IsNull)
            return;
        PerCpuPtr<int> area = counters[0]._counters;
        OwnerOf(area).Free(area);
        counters.Clear();
    }

    /// <summary>Frees a counter made by <see cref="Init"/>.</summary>
    public void Destroy() => DestroyMany(MemoryMarshal.CreateSpan(ref this, 1));

    /// <summary>
    /// Charges the per-CPU memory of counters made by one <see cref="InitMany"/> to
    /// <paramref name="group"/> (the current group if null) without reallocating it (the
    /// seed's percpu_counter_charge_many, patch 6). False, with nothing charged, over a limit.
    /// </summary>
    public static bool ChargeMany(Span<PerCpuCounter> counters, MemoryGroup? group = null)
    {
        return PerCpuAllocator.ChargeArea(FirstArea(counters).Address, group ?? MemoryGroup.Current);
    }

    /// <summary>Gives back the charge made by <see cref="ChargeMany"/> (percpu_counter_uncharge_many).</summary>
    public static void UnchargeMany(Span<PerCpuCounter> counters)
    {
        PerCpuAllocator.UnchargeArea(FirstArea(counters).Address);
    }

    /// <summary>
    /// Adds <paramref name="amount"/> (percpu_counter_add): one atomic add on this CPU's
    /// delta, and a fold into the shared count when the delta reaches <see cref="Batch"/>.
    /// Must not take a lock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(long amount)
    {
        Debug.Assert(!_counters.IsNull, "Add on a counter that was not initialised");
        int batch = Batch;
        if (amount > -batch && amount < batch)
        {
            ref int delta = ref _counters.Local;
            int now = Interlocked.Add(ref delta, (int)amount);
            if (now >= batch || now <= -batch)
                Fold(ref delta);
        }
        else
        {
            Interlocked.Add(ref _count, amount);
        }
    }

    /// <summary>Adds 1 (<see cref="Add"/>).</summary>
    public void Increment() => Add(1);

    /// <summary>Subtracts 1 (<see cref="Add"/>).</summary>
    public void Decrement() => Add(-1);

    private void Fold(ref int delta) => Interlocked.Add(ref _count, Interlocked.Exchange(ref delta, 0));

    /// <summary>The shared count alone (percpu_counter_read): one load, off by the unfolded deltas.</summary>
    public readonly long Read() => Volatile.Read(in _count);

    /// <summary><see cref="Read"/>, never below zero (percpu_counter_read_positive).</summary>
    public readonly long ReadPositive() => Math.Max(0, Read());

    /// <summary>The shared count plus every CPU's delta (percpu_counter_sum): exact when no Add runs beside it.</summary>
    public readonly long Sum()
    {
        long sum = Volatile.Read(in _count);
        foreach (ref int delta in _counters)
            sum += Volatile.Read(ref delta);
        return sum;
    }

    /// <summary>
    /// Compares with <paramref name="value"/> (__percpu_counter_compare): from <see cref="Read"/>
    /// when it is far enough off to decide, else from <see cref="Sum"/>.
    /// </summary>
    public readonly int CompareTo(long value)
    {
        long approximate = Read();
        if (Math.Abs(approximate - value) >= (long)Batch * CpuTopology.PossibleCpus)
            return approximate > value ? 1 : -1;
        return Sum().CompareTo(value);
    }

    /// <summary>Sets the count, clearing every delta (percpu_counter_set; not atomic against concurrent Add).</summary>
    public void Set(long amount)
    {
        foreach (ref int delta in _counters)
            Volatile.Write(ref delta, 0);
        Volatile.Write(ref _count, amount);
    }

    private static PerCpuPtr<int> FirstArea(Span<PerCpuCounter> counters)
    {
        if (counters.IsEmpty || counters[0]._counters.IsNull)
            throw new ArgumentException("counters not initialised", nameof(counters));
        return counters[0]._counters;
    }

    private static PerCpuAllocator OwnerOf(PerCpuPtr<int> area) =>
        PerCpuAllocator.OwnerOf(area.Address)
        ?? throw new SlabUsageException(null, area.Address, $"per-CPU counter area 0x{area.Address:x} is not a live per-CPU area (destroyed already?)");
}
