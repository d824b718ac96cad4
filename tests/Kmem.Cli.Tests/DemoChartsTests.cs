using System.Globalization;
using System.Xml.Linq;
using Kmem.Cli;
using ScottPlot;
using ScottPlot.Plottables;
using ScottPlot.TickGenerators;

namespace Kmem.Cli.Tests;

/// <summary>
/// `kmem demo`'s charts, drawn from a small synthetic set of records (no demo run): the
/// files, what they say, and the axes read back from the plots before rendering.
/// </summary>
public sealed class DemoChartsTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("kmem-demo-charts-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static readonly byte[] s_pngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    [Fact]
    public void Every_chart_is_written_as_svg_and_png_with_the_machine_and_the_oversubscribed_threads()
    {
        DemoEnvironment env = DemoSamples.Environment(cores: 2);
        List<string> files = DemoCharts.Write(_dir.FullName, DemoSamples.Records(), env);

        string[] names = ["throughput-mm", "mutex-mm", "throughput-tc", "mutex-tc"];
        Assert.Equal([.. names.SelectMany(n => new[] { n + ".svg", n + ".png" })], files.Select(Path.GetFileName));
        foreach (string name in names)
        {
            byte[] png = File.ReadAllBytes(Path.Combine(_dir.FullName, name + ".png"));
            Assert.Equal(s_pngSignature, png[..8]);
            Assert.True(png.Length > 10_000, $"{name}.png: {png.Length} bytes");
            // IHDR, the first chunk: width and height, big-endian, after its length and type.
            Assert.Equal(DemoCharts.Width, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));
            Assert.Equal(DemoCharts.Height, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));

            string[] texts = SvgTexts(Path.Combine(_dir.FullName, name + ".svg"));
            Assert.Contains(env.Subtitle, texts);
            Assert.Contains("2 logical cores, Test CPU 9000 @ 1.00GHz, TestOS 1 (synthetic), .NET 10.0.0 | 2026-12-04 05:06 UTC | commit 0123456789ab", texts);
            Assert.Contains("oversubscribed: 4 and 8 threads on 2 cores", texts);
            Assert.Contains(texts, t => t.EndsWith(name.StartsWith("throughput", StringComparison.Ordinal) ? "(higher is better)" : "lower is better)", StringComparison.Ordinal));
            Assert.Contains("threads", texts);
            foreach (string threads in new[] { "1", "2", "4", "8" })
                Assert.Contains(threads, texts);
        }
    }

    [Fact]
    public void Thread_counts_within_the_cores_are_not_marked()
    {
        DemoEnvironment env = DemoSamples.Environment(cores: 8);
        foreach (DemoCharts.Chart chart in DemoCharts.Build(DemoSamples.Records(), env))
            Assert.Empty(chart.Plot.GetPlottables<HorizontalSpan>());
        DemoCharts.Write(_dir.FullName, DemoSamples.Records(), env);
        foreach (string svg in Directory.GetFiles(_dir.FullName, "*.svg"))
            Assert.DoesNotContain(SvgTexts(svg), t => t.Contains("oversubscribed", StringComparison.Ordinal));
    }

    [Fact]
    public void Only_the_thread_counts_above_the_cores_are_shaded()
    {
        Plot plot = DemoCharts.Throughput(DemoSamples.Records(), "mm", DemoSamples.Environment(cores: 4));
        HorizontalSpan span = Assert.Single(plot.GetPlottables<HorizontalSpan>());
        // Positions 0..3 are 1, 2, 4 and 8 threads: only 8 (position 3) exceeds 4 cores.
        Assert.Equal(2.5, span.X1);
        Assert.Equal(3.5, span.X2);
        Assert.Contains(plot.GetPlottables<Text>(), t => t.LabelStyle.Text == "oversubscribed: 8 threads on 4 cores");
    }

    [Theory]
    [InlineData("mm")]
    [InlineData("tc")]
    public void The_throughput_axis_runs_from_0_to_just_above_the_largest_value(string workload)
    {
        List<DemoOutput.RunRecord> records = DemoSamples.Records();
        Plot plot = DemoCharts.Throughput(records, workload, DemoSamples.Environment(cores: 2));
        double max = records.Where(r => r.Workload == workload).Max(r => r.OpsPerSecond);

        AxisLimits limits = plot.Axes.GetLimits();
        Assert.Equal(0, limits.Bottom);
        Assert.InRange(limits.Top, max * 1.0001, max * 1.25);
        // Every thread count is inside the x range: 4 positions, 0 to 3.
        Assert.True(limits.Left < 0 && limits.Right > 3, $"x from {limits.Left} to {limits.Right}");
        Assert.Equal(4, plot.GetPlottables<Scatter>().Count());
        // The points are the records' rates, in thread order.
        Scatter baseline = plot.GetPlottables<Scatter>().Single(s => s.LegendText == "baseline");
        Assert.Equal(
            records.Where(r => r.Workload == workload && r.Mode == "baseline").OrderBy(r => r.Threads).Select(r => r.OpsPerSecond),
            baseline.Data.GetScatterPoints().Select(p => p.Y));
    }

    [Theory]
    [InlineData("mm")]
    [InlineData("tc")]
    public void The_mutex_chart_has_a_log_axis_with_0_on_a_floor(string workload)
    {
        List<DemoOutput.RunRecord> records = DemoSamples.Records();
        Plot plot = DemoCharts.MutexPerLifetime(records, workload, DemoSamples.Environment(cores: 2));

        AxisLimits limits = plot.Axes.GetLimits();
        // NumericManual hands out its ticks once a render has placed them.
        plot.RenderInMemory(DemoCharts.Width, DemoCharts.Height);
        Assert.Equal(limits, plot.Axes.GetLimits());

        // The left axis is labelled with powers of ten, one decade per unit: a log axis.
        Tick[] majors = [.. Assert.IsType<NumericManual>(plot.Axes.Left.TickGenerator).Ticks.Where(t => t.IsMajor).OrderBy(t => t.Position)];
        Assert.Equal("0", majors[0].Label);
        double floor = majors[0].Position;
        Assert.True(majors.Length >= 5, $"{majors.Length} decades");
        for (int i = 1; i < majors.Length; i++)
        {
            Assert.Equal(majors[i - 1].Position + 1, majors[i].Position);
            Assert.Equal(majors[i].Position, Math.Log10(double.Parse(majors[i].Label, CultureInfo.InvariantCulture)), 9);
        }

        // Each point is the log of its record's value; a value of 0 sits on the floor,
        // and the floor is below every value above 0.
        double minPositive = records.Where(r => r.Workload == workload && r.AllocMutexAcquisitionsPerLifetime > 0).Min(r => r.AllocMutexAcquisitionsPerLifetime);
        Assert.True(floor < Math.Log10(minPositive));
        int zeros = 0;
        foreach (Scatter line in plot.GetPlottables<Scatter>())
        {
            string mode = line.LegendText.Split(' ')[0];
            double[] values = [.. records.Where(r => r.Workload == workload && r.Mode == mode).OrderBy(r => r.Threads).Select(r => r.AllocMutexAcquisitionsPerLifetime)];
            double[] ys = [.. line.Data.GetScatterPoints().Select(p => p.Y)];
            Assert.Equal(values.Length, ys.Length);
            for (int i = 0; i < values.Length; i++)
            {
                if (values[i] == 0)
                    zeros++;
                Assert.Equal(values[i] > 0 ? Math.Log10(values[i]) : floor, ys[i], 9);
            }
        }
        Assert.True(zeros >= 4, "the sample has values of 0 (no-percpu)");

        double max = records.Where(r => r.Workload == workload).Max(r => r.AllocMutexAcquisitionsPerLifetime);
        Assert.InRange(Math.Pow(10, limits.Top), max * 1.0001, max * 1.25);
        Assert.True(limits.Bottom < floor);
        // The legend gives the headline per mode.
        Assert.Contains(plot.GetPlottables<Scatter>(), s => s.LegendText == (workload == "mm" ? "baseline (2)" : "baseline (3)"));
        Assert.Contains(plot.GetPlottables<Scatter>(), s => s.LegendText == "no-percpu (0)");
        Assert.Contains(plot.GetPlottables<Scatter>(), s => s.LegendText == "percpu-cache (0.0012)");
        Assert.Contains(plot.GetPlottables<Scatter>(), s => s.LegendText == "ctor-dtor (0 to 1.24e-4)");
    }

    [Theory]
    [InlineData(0, "1")]
    [InlineData(1, "10")]
    [InlineData(-3, "0.001")]
    [InlineData(-4, "1e-4")]
    [InlineData(7, "1e7")]
    public void Decades_are_labelled_so_that_they_parse_back(int decade, string label)
    {
        Assert.Equal(label, DemoCharts.Decade(decade));
        Assert.Equal(Math.Pow(10, decade), double.Parse(label, CultureInfo.InvariantCulture), 12);
    }

    /// <summary>The text of every text element: ScottPlot's SVG writer puts each string drawn in one.</summary>
    private static string[] SvgTexts(string path)
    {
        XDocument svg = XDocument.Load(path);
        Assert.Equal("svg", svg.Root!.Name.LocalName);
        return [.. svg.Descendants().Where(e => e.Name.LocalName == "text").Select(e => e.Value.Trim())];
    }
}
