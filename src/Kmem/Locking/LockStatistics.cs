using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Kmem.Locking;

/// <summary>
/// The figures `perf lock report` prints for one lock, or for every lock of one class:
/// acquisitions, acquisitions that found the lock held, and the time those waited.
/// </summary>
/// <param name="Name">The lock class (<see cref="NamedLock.ClassName"/>).</param>
/// <param name="Acquired">Acquisitions.</param>
/// <param name="Contended">Acquisitions that found the lock held and waited.</param>
/// <param name="TotalWait">Time spent waiting, over all contended acquisitions.</param>
/// <param name="MaxWait">Longest single wait (over the lock's life, also in a difference).</param>
/// <param name="MinWait">Shortest single wait (over the lock's life, also in a difference); zero with no contention.</param>
/// <param name="Instances">Locks summed into this line.</param>
public readonly record struct LockStatistics(
    string Name, long Acquired, long Contended, TimeSpan TotalWait, TimeSpan MaxWait, TimeSpan MinWait, int Instances)
{
    /// <summary>Mean wait of a contended acquisition.</summary>
    public TimeSpan AverageWait => Contended == 0 ? TimeSpan.Zero : TotalWait / Contended;

    /// <summary>
    /// The figures gathered between <paramref name="before"/> and this snapshot of the
    /// same lock. Maximum and minimum cannot be taken apart, so they stay this snapshot's.
    /// </summary>
    public LockStatistics Since(LockStatistics before) => this with
    {
        Acquired = Acquired - before.Acquired,
        Contended = Contended - before.Contended,
        TotalWait = TotalWait - before.TotalWait,
    };

    /// <summary>Every live lock of each class, summed per class, busiest first.</summary>
    /// <remarks>A lock the garbage collector has taken drops out of the sums.</remarks>
    public static IReadOnlyList<LockStatistics> ByClass() => LockRegistry.ByClass();

    /// <summary>A table in the layout of `perf lock report`.</summary>
    public static string Format(IEnumerable<LockStatistics> locks)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture,
            $"{"Name",24} {"acquired",12} {"contended",10} {"avg wait",10} {"total wait",11} {"max wait",10} {"min wait",10}");
        foreach (LockStatistics l in locks)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"{l.Name,24} {l.Acquired,12} {l.Contended,10} {FormatTime(l.AverageWait),10} {FormatTime(l.TotalWait),11} {FormatTime(l.MaxWait),10} {FormatTime(l.MinWait),10}");
        }
        return text.ToString();
    }

    /// <summary>A duration in the unit perf lock would pick (ns, us, ms, s).</summary>
    public static string FormatTime(TimeSpan t)
    {
        double ns = t.Ticks * 100.0;
        return ns switch
        {
            < 1e3 => string.Create(CultureInfo.InvariantCulture, $"{ns:0} ns"),
            < 1e6 => string.Create(CultureInfo.InvariantCulture, $"{ns / 1e3:0.00} us"),
            < 1e9 => string.Create(CultureInfo.InvariantCulture, $"{ns / 1e6:0.00} ms"),
            _ => string.Create(CultureInfo.InvariantCulture, $"{ns / 1e9:0.00} s"),
        };
    }

    internal static TimeSpan TicksToTime(long stopwatchTicks) =>
        TimeSpan.FromTicks((long)(stopwatchTicks * ((double)TimeSpan.TicksPerSecond / Stopwatch.Frequency)));

    /// <summary>This line and <paramref name="other"/> together: counts and waits added, the longer maximum and shorter minimum kept.</summary>
    public LockStatistics Add(LockStatistics other) => this with
    {
        Acquired = Acquired + other.Acquired,
        Contended = Contended + other.Contended,
        TotalWait = TotalWait + other.TotalWait,
        MaxWait = other.MaxWait > MaxWait ? other.MaxWait : MaxWait,
        MinWait = other.Contended == 0 ? MinWait : Contended == 0 || other.MinWait < MinWait ? other.MinWait : MinWait,
        Instances = Instances + other.Instances,
    };
}
