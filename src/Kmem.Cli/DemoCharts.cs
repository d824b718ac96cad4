using System.Globalization;
using Kmem.Workloads;
using ScottPlot;
using ScottPlot.Panels;
using ScottPlot.TickGenerators;

namespace Kmem.Cli;

/// <summary>
/// `kmem demo`'s charts, drawn with ScottPlot: per workload the lifetimes per second of
/// each mode over the thread counts, and the headline figure, pcpu_alloc_mutex
/// acquisitions per lifetime, on a log axis. Every chart is written as SVG and PNG and
/// carries the machine, date and commit in its subtitle. The plots are built apart from
/// writing them so that the tests can read their axes back.
/// </summary>
internal static class DemoCharts
{
    public const int Width = 960, Height = 540;

    /// <summary>
    /// Headroom above the largest value: enough for the oversubscription label at the top
    /// of the throughput charts, small enough that the data fill the plot (the hand-made
    /// writer before rounded up to 1, 2 or 5 times a power of ten: up to twice the data).
    /// </summary>
    public const double TopMargin = 1.12;

    /// <summary>
    /// The log chart's headroom, as a factor of the largest value: a twelfth of a decade, so
    /// the baseline's line, at the top, stays clear of the frame.
    /// </summary>
    public const double LogTopMargin = 1.2;

    /// <summary>A chart and the file name, without extension, it is written under.</summary>
    public sealed record Chart(string Name, Plot Plot);

    // The colours the hand-made SVG charts had, so the modes keep theirs across versions.
    private static readonly Dictionary<string, string> s_modeColours = new()
    {
        ["baseline"] = "#d62728",
        ["ctor-dtor"] = "#2ca02c",
        ["no-percpu"] = "#1f77b4",
        ["percpu-cache"] = "#ff7f0e",
    };

    /// <summary>Every chart of a demo run: throughput-W and mutex-W for each workload W. The caller owns (and disposes) the plots.</summary>
    public static List<Chart> Build(IReadOnlyList<DemoOutput.RunRecord> records, DemoEnvironment env)
    {
        var charts = new List<Chart>();
        foreach (string w in Workloads(records))
        {
#pragma warning disable CA2000 // ownership passes to the returned list; Write disposes every plot
            charts.Add(new Chart($"throughput-{w}", Throughput(records, w, env)));
            charts.Add(new Chart($"mutex-{w}", MutexPerLifetime(records, w, env)));
#pragma warning restore CA2000
        }
        return charts;
    }

    /// <summary>Writes every chart as NAME.svg and NAME.png into <paramref name="folder"/>; returns the files.</summary>
    public static List<string> Write(string folder, IReadOnlyList<DemoOutput.RunRecord> records, DemoEnvironment env)
    {
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        List<Chart> charts = Build(records, env);
        try
        {
            foreach (Chart chart in charts)
            {
                string svg = Path.Combine(folder, chart.Name + ".svg"), png = Path.Combine(folder, chart.Name + ".png");
                chart.Plot.SaveSvg(svg, Width, Height);
                chart.Plot.SavePng(png, Width, Height);
                files.Add(svg);
                files.Add(png);
            }
        }
        finally
        {
            foreach (Chart chart in charts)
                chart.Plot.Dispose();
        }
        return files;
    }

    /// <summary>Lifetimes per second of each mode over the thread counts, on a linear axis from 0.</summary>
    public static Plot Throughput(IReadOnlyList<DemoOutput.RunRecord> records, string workload, DemoEnvironment env)
    {
        int[] threads = ThreadCounts(records, workload);
        var plot = NewPlot($"{workload}-like object lifetimes per second", env);
        double max = 0;
        foreach (string mode in Modes(records, workload))
        {
            double[] ys = [.. threads.Select(t => Find(records, workload, mode, t)?.OpsPerSecond ?? double.NaN)];
            AddLine(plot, mode, ys, mode);
            max = Math.Max(max, ys.Where(double.IsFinite).DefaultIfEmpty(0).Max());
        }
        // From 0: a rate's ratio between modes reads off the heights only on an axis from 0.
        double top = max > 0 ? max * TopMargin : 1;
        plot.Axes.SetLimitsY(0, top);
        plot.Axes.Left.TickGenerator = new NumericAutomatic { LabelFormatter = Short };
        plot.YLabel("object lifetimes per second, all threads (higher is better)", 13);
        ThreadAxis(plot, threads);
        MarkOversubscribed(plot, threads, env.Machine.Cores, top, Alignment.UpperLeft);
        return plot;
    }

    /// <summary>
    /// The headline figure: pcpu_alloc_mutex acquisitions per lifetime of each mode over the
    /// thread counts. ScottPlot 5 has no logarithmic axis type; as its own cookbook does, the
    /// values are plotted as their base-10 logarithms and the axis is labelled with the
    /// powers of ten (<see cref="NumericManual"/> ticks, one major per decade).
    /// </summary>
    public static Plot MutexPerLifetime(IReadOnlyList<DemoOutput.RunRecord> records, string workload, DemoEnvironment env)
    {
        int[] threads = ThreadCounts(records, workload);
        string[] modes = Modes(records, workload);
        var values = modes.ToDictionary(m => m, m => threads.Select(t => Find(records, workload, m, t)?.AllocMutexAcquisitionsPerLifetime ?? double.NaN).ToArray());
        double[] all = [.. values.Values.SelectMany(v => v).Where(double.IsFinite)];
        double minPositive = all.Where(v => v > 0).DefaultIfEmpty(1).Min();
        double max = all.DefaultIfEmpty(0).Max();

        // A log axis has no 0, and 0 is a real result here: no-percpu never takes the mutex,
        // and ctor-dtor can take it 0 times in a run whose slabs all came from the warm-up.
        // Such points go on a floor one decade below the smallest value above 0, whose tick
        // says "0"; there is no decade between the floor and the next tick (a scale break).
        int floor = (int)Math.Floor(Math.Log10(minPositive)) - 1;
        double bottom = floor - 0.5;
        double top = max > 0 ? Math.Log10(max * LogTopMargin) : floor + 1;

        var plot = NewPlot($"{workload}-like: global pcpu_alloc_mutex acquisitions per object lifetime", env);
        // The scale break: a white band across the grid between the floor and the first decade,
        // added before the lines so that they cross it. (A dashed line would do, but Skia's SVG
        // canvas has no dash effects and says so on standard output.)
        var gap = plot.Add.VerticalSpan(floor + 0.3, floor + 0.7, Colors.White);
        gap.LineWidth = 0;
        foreach (string mode in modes)
        {
            double[] ys = [.. values[mode].Select(v => double.IsNaN(v) ? v : v > 0 ? Math.Log10(v) : floor)];
            double[] finite = [.. values[mode].Where(double.IsFinite)];
            // The legend gives each mode's range, so the headline reads without the axis.
            string range = finite.Length == 0 ? "-"
                : finite.Min() == finite.Max() ? Figure(finite[0])
                : $"{Figure(finite.Min())} to {Figure(finite.Max())}";
            AddLine(plot, $"{mode} ({range})", ys, mode);
        }
        plot.Axes.SetLimitsY(bottom, top);
        plot.Axes.Left.TickGenerator = LogTicks(floor, top);
        // The major grid lines follow the decades; the minor ones mark 2..9 within them.
        plot.Grid.MinorLineWidth = 1;
        plot.Grid.MinorLineColor = Colors.Black.WithAlpha(0.03);
        plot.YLabel("pcpu_alloc_mutex per lifetime (log scale; lower is better)", 13);
        ThreadAxis(plot, threads);
        // At the bottom: the baseline's line runs along the top of this chart.
        MarkOversubscribed(plot, threads, env.Machine.Cores, bottom, Alignment.LowerLeft);
        return plot;
    }

    /// <summary>The log axis's ticks: "0" at the floor, then every power of ten up to the top, with 2..9 times each as minors.</summary>
    private static NumericManual LogTicks(int floor, double top)
    {
        var ticks = new NumericManual();
        ticks.AddMajor(floor, "0");
        for (int decade = floor + 1; decade <= Math.Floor(top); decade++)
            ticks.AddMajor(decade, Decade(decade));
        for (int decade = floor + 1; decade <= Math.Floor(top); decade++)
        {
            for (int k = 2; k <= 9; k++)
            {
                double position = decade + Math.Log10(k);
                if (position <= top)
                    ticks.AddMinor(position);
            }
        }
        return ticks;
    }

    /// <summary>10^<paramref name="decade"/> as a label that parses back: 1000, 1, 0.01, 1e-4.</summary>
    internal static string Decade(int decade) => decade is >= -3 and <= 6
        ? Math.Pow(10, decade).ToString("0.###", CultureInfo.InvariantCulture)
        : string.Create(CultureInfo.InvariantCulture, $"1e{decade}");

    private static Plot NewPlot(string title, DemoEnvironment env)
    {
        var plot = new Plot();
        // ScottPlot's default family resolves to a serif face here; a sans face reads better at
        // tick-label sizes, where one is installed.
        foreach (string family in new[] { "DejaVu Sans", "Liberation Sans", "Arial" })
        {
            // GetTypeface may fall back to another family; only an exact match counts.
            if (Fonts.GetTypeface(family, false, false)?.FamilyName == family)
            {
                plot.Font.Set(family);
                break;
            }
        }
        plot.Title(title, 16);
        // A second title panel under the first: the machine, date and commit, smaller.
        var subtitle = new TitlePanel();
        subtitle.Label.Text = env.Subtitle;
        subtitle.Label.FontSize = 11;
        subtitle.Label.Bold = false;
        subtitle.Label.ForeColor = Colors.Black.WithAlpha(0.7);
        subtitle.Label.FontName = plot.Axes.Title.Label.FontName;
        plot.Axes.AddPanel(subtitle);
        plot.ShowLegend(Edge.Right);
        return plot;
    }

    private static void AddLine(Plot plot, string legend, double[] ys, string mode)
    {
        double[] xs = [.. Enumerable.Range(0, ys.Length).Select(i => (double)i)];
        Color colour = s_modeColours.TryGetValue(mode, out string? hex) ? Color.FromHex(hex) : plot.Add.GetNextColor();
        var line = plot.Add.Scatter(xs, ys, colour);
        line.LegendText = legend;
        line.LineWidth = 2.5f;
        line.MarkerSize = 7;
    }

    /// <summary>Thread counts at evenly spaced positions (they double: 1, 2, 4, 8), labelled with the counts.</summary>
    private static void ThreadAxis(Plot plot, int[] threads)
    {
        plot.Axes.Bottom.TickGenerator = new NumericManual(
            [.. Enumerable.Range(0, threads.Length).Select(i => (double)i)],
            [.. threads.Select(t => t.ToString(CultureInfo.InvariantCulture))]);
        plot.Axes.SetLimitsX(-0.3, threads.Length - 0.7);
        plot.XLabel("threads", 13);
    }

    /// <summary>
    /// Shades the thread counts above the machine's cores, with a label saying so: there the
    /// threads take turns on the cores, and a lock holder preempted with the lock held makes
    /// every waiter wait out its time slice, which a machine with more cores would not show.
    /// </summary>
    private static void MarkOversubscribed(Plot plot, int[] threads, int cores, double y, Alignment alignment)
    {
        int first = Array.FindIndex(threads, t => t > cores);
        if (first < 0)
            return;
        var span = plot.Add.HorizontalSpan(first - 0.5, threads.Length - 0.5, Colors.Gray.WithAlpha(0.15));
        span.LineWidth = 0;
        var label = plot.Add.Text(OversubscribedLabel([.. threads.Skip(first)], cores), first - 0.45, y);
        label.Alignment = alignment;
        label.LabelFontSize = 11;
        label.OffsetY = alignment == Alignment.UpperLeft ? 4 : -4;
        label.LabelStyle.FontName = plot.Axes.Title.Label.FontName;
    }

    /// <summary>"oversubscribed: 4 and 8 threads on 2 cores".</summary>
    internal static string OversubscribedLabel(int[] threads, int cores)
    {
        string counts = threads.Length == 1
            ? threads[0].ToString(CultureInfo.InvariantCulture)
            : string.Join(", ", threads[..^1]) + " and " + threads[^1].ToString(CultureInfo.InvariantCulture);
        return string.Create(CultureInfo.InvariantCulture, $"oversubscribed: {counts} threads on {cores} core{(cores == 1 ? "" : "s")}");
    }

    /// <summary>A value per lifetime in 3 significant digits (0.0012, 2), in powers of ten below 0.001 (1.2e-4).</summary>
    internal static string Figure(double v) => v is > 0 and < 0.001
        ? v.ToString("0.0#e0", CultureInfo.InvariantCulture)
        : v.ToString("G3", CultureInfo.InvariantCulture);

    private static string Short(double v) => v switch
    {
        >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{v / 1e6:0.#} M"),
        >= 1e3 => string.Create(CultureInfo.InvariantCulture, $"{v / 1e3:0.#} k"),
        _ => v.ToString("0.##", CultureInfo.InvariantCulture),
    };

    private static DemoOutput.RunRecord? Find(IReadOnlyList<DemoOutput.RunRecord> records, string workload, string mode, int threads) =>
        records.FirstOrDefault(r => r.Workload == workload && r.Mode == mode && r.Threads == threads);

    private static string[] Workloads(IReadOnlyList<DemoOutput.RunRecord> records) => [.. records.Select(r => r.Workload).Distinct()];

    private static int[] ThreadCounts(IReadOnlyList<DemoOutput.RunRecord> records, string workload) =>
        [.. records.Where(r => r.Workload == workload).Select(r => r.Threads).Distinct().Order()];

    /// <summary>The modes in the demo's order, then any others the records have.</summary>
    private static string[] Modes(IReadOnlyList<DemoOutput.RunRecord> records, string workload)
    {
        string[] present = [.. records.Where(r => r.Workload == workload).Select(r => r.Mode).Distinct()];
        return [.. SeedWorkload.Modes.Where(present.Contains), .. present.Where(m => !SeedWorkload.Modes.Contains(m))];
    }
}
