using System.Globalization;
using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// The CPUs per-CPU memory is laid out for: one unit per possible CPU, as
/// <c>num_possible_cpus()</c> sizes the kernel's chunks.
/// </summary>
/// <remarks>
/// User space owns no CPU: a thread may be moved to another CPU, or preempted by a
/// thread on the same CPU, between reading its CPU number and touching that CPU's unit.
/// So per-CPU data here is per-CPU for locality (threads on different CPUs touch
/// different cache lines), not for exclusion: updates must be atomic or tolerate races,
/// as <see cref="PerCpuCounter"/>'s are. Use it to index and size per-CPU data of your own:
/// <see cref="PerCpuPtr{T}"/>'s <c>this[cpu]</c> takes 0 to <see cref="PossibleCpus"/> - 1.
/// Both members are safe to read from any thread.
/// </remarks>
public static class CpuTopology
{
    /// <summary>Units per per-CPU area: the possible CPUs (Linux: /sys/devices/system/cpu/possible), at least <see cref="Environment.ProcessorCount"/>.</summary>
    public static int PossibleCpus { get; } = ReadPossibleCpus();

    /// <summary>
    /// The unit of the CPU the calling thread ran on recently: the processor number is
    /// read again every 64 calls on a thread (it costs several nanoseconds),
    /// so after a migration a thread keeps its old CPU's unit for a few more uses. That
    /// costs locality, never correctness: per-CPU data here is updated atomically. A
    /// processor number beyond <see cref="PossibleCpus"/> (affinity or cgroup quirks)
    /// folds onto an existing unit.
    /// </summary>
    public static int CurrentCpu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            // One thread-static word: the CPU above the uses left, so a use is one load and one
            // store. Uses left of 0 (spent) or 255 (a new thread's 0, decremented) refresh it.
            int state = t_cpuAndUses - 1;
            if ((uint)((state & UsesMask) - 1) >= RefreshEvery)
                return Refresh();
            t_cpuAndUses = state;
            return state >> UsesBits;
        }
    }

    /// <summary>Uses of a cached processor number before it is read again.</summary>
    internal const int RefreshEvery = 64;

    private const int UsesBits = 8;
    private const int UsesMask = (1 << UsesBits) - 1;

    [ThreadStatic] private static int t_cpuAndUses;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int Refresh()
    {
        uint id = (uint)Thread.GetCurrentProcessorId();
        uint n = (uint)PossibleCpus;
        int cpu = (int)(id < n ? id : id % n);
        t_cpuAndUses = (cpu << UsesBits) | RefreshEvery;
        return cpu;
    }

    private const int MaxCpus = 4096;

    private static int ReadPossibleCpus()
    {
        int cpus = Environment.ProcessorCount;
        try
        {
            const string possible = "/sys/devices/system/cpu/possible";
            if (OperatingSystem.IsLinux() && File.Exists(possible))
                cpus = Math.Max(cpus, HighestInRanges(File.ReadAllText(possible)) + 1);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return Math.Clamp(cpus, 1, MaxCpus);
    }

    /// <summary>The highest number in a kernel CPU list such as "0-3,8,10-11"; -1 for none.</summary>
    internal static int HighestInRanges(string list)
    {
        int highest = -1;
        foreach (string part in list.Trim().Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            string last = part.Contains('-', StringComparison.Ordinal) ? part[(part.IndexOf('-', StringComparison.Ordinal) + 1)..] : part;
            if (int.TryParse(last, NumberStyles.None, CultureInfo.InvariantCulture, out int n))
                highest = Math.Max(highest, n);
        }
        return highest;
    }
}
