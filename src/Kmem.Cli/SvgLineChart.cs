using System.Globalization;
using System.Net;
using System.Text;

namespace Kmem.Cli;

/// <summary>
/// A line chart as standalone SVG: series of (x, y) points over categorical x values,
/// axes with ticks, a legend. Written here because no plotting package (OxyPlot,
/// ScottPlot, SkiaSharp) is available from the package feed this project builds against.
/// </summary>
internal sealed class SvgLineChart(string title, string xLabel, string yLabel)
{
    private const int Width = 720, Height = 420, Left = 80, Right = 170, Top = 48, Bottom = 56;
    private static readonly string[] s_colours = ["#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b"];
    private readonly List<(string Name, IReadOnlyList<double> Values)> _series = [];
    private IReadOnlyList<string> _categories = [];

    public SvgLineChart Categories(IReadOnlyList<string> categories)
    {
        _categories = categories;
        return this;
    }

    public SvgLineChart Series(string name, IReadOnlyList<double> values)
    {
        _series.Add((name, values));
        return this;
    }

    public string Render()
    {
        double max = NiceCeiling(_series.SelectMany(s => s.Values).DefaultIfEmpty(1).Max());
        int plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double X(int i) => Left + (_categories.Count == 1 ? plotW / 2.0 : i * plotW / (double)(_categories.Count - 1));
        double Y(double v) => Top + plotH - v / max * plotH;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{Escape(title)}</text>\n");
        for (int t = 0; t <= 5; t++)
        {
            double v = max * t / 5, y = Y(v);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{y:F1}\" x2=\"{Left + plotW}\" y2=\"{y:F1}\" stroke=\"#ddd\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 6}\" y=\"{y + 4:F1}\" text-anchor=\"end\">{Escape(Short(v))}</text>\n");
        }
        for (int i = 0; i < _categories.Count; i++)
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(i):F1}\" y=\"{Top + plotH + 18}\" text-anchor=\"middle\">{Escape(_categories[i])}</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Top + plotH}\" x2=\"{Left + plotW}\" y2=\"{Top + plotH}\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Top}\" x2=\"{Left}\" y2=\"{Top + plotH}\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left + plotW / 2}\" y=\"{Height - 14}\" text-anchor=\"middle\">{Escape(xLabel)}</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text transform=\"translate(18 {Top + plotH / 2}) rotate(-90)\" text-anchor=\"middle\">{Escape(yLabel)}</text>\n");
        for (int s = 0; s < _series.Count; s++)
        {
            string colour = s_colours[s % s_colours.Length];
            var (name, values) = _series[s];
            string points = string.Join(' ', values.Select((v, i) => string.Create(CultureInfo.InvariantCulture, $"{X(i):F1},{Y(v):F1}")));
            svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" points=\"{points}\"/>\n");
            for (int i = 0; i < values.Count; i++)
                svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{X(i):F1}\" cy=\"{Y(values[i]):F1}\" r=\"3.5\" fill=\"{colour}\"/>\n");
            double ly = Top + 10 + s * 22;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Width - Right + 16}\" y1=\"{ly:F1}\" x2=\"{Width - Right + 40}\" y2=\"{ly:F1}\" stroke=\"{colour}\" stroke-width=\"2.5\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width - Right + 46}\" y=\"{ly + 4:F1}\">{Escape(name)}</text>\n");
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    /// <summary>1, 2 or 5 times a power of ten, at or above <paramref name="v"/>.</summary>
    private static double NiceCeiling(double v)
    {
        if (v <= 0)
            return 1;
        double p = Math.Pow(10, Math.Floor(Math.Log10(v)));
        foreach (double m in new[] { 1.0, 2, 5, 10 })
        {
            if (m * p >= v)
                return m * p;
        }
        return 10 * p;
    }

    private static string Short(double v) => v switch
    {
        >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{v / 1e6:0.#} M"),
        >= 1e3 => string.Create(CultureInfo.InvariantCulture, $"{v / 1e3:0.#} k"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{v:0.##}"),
    };

    private static string Escape(string s) => WebUtility.HtmlEncode(s);
}
