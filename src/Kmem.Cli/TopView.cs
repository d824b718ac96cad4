using System.Globalization;
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Kmem.Cli;

/// <summary>What `kmem top --sort` orders the caches by.</summary>
internal enum TopSort
{
    /// <summary>Memory held, most first (the default: what a look at memory wants first).</summary>
    Memory,

    /// <summary>Active objects, most first.</summary>
    Active,

    /// <summary>Total object slots, most first.</summary>
    Total,

    /// <summary>Cache name, A to Z.</summary>
    Name,
}

/// <summary>Renders another process's <see cref="RemoteSnapshot"/>s: `kmem top`'s screen and `kmem slabinfo -p`'s text.</summary>
internal static class TopView
{
    /// <summary>What a process without a Kmem meter shows instead of caches.</summary>
    public const string NoMeter = "no Kmem meter in this process: it has created no Kmem cache yet, or does not use Kmem";

    /// <summary>The caches in <paramref name="sort"/> order; ties by name, so a refresh does not reshuffle equal rows.</summary>
    public static IEnumerable<RemoteCache> Sorted(IEnumerable<RemoteCache> caches, TopSort sort)
    {
        var byName = caches.OrderBy(c => c.Name, StringComparer.Ordinal);
        return sort switch
        {
            TopSort.Active => caches.OrderByDescending(c => c.ActiveObjects).ThenBy(c => c.Name, StringComparer.Ordinal),
            TopSort.Total => caches.OrderByDescending(c => c.TotalObjects).ThenBy(c => c.Name, StringComparer.Ordinal),
            TopSort.Name => byName,
            _ => caches.OrderByDescending(c => c.BytesHeld).ThenBy(c => c.Name, StringComparer.Ordinal),
        };
    }

    /// <summary>The header: the process, the time of the values and the number of caches; then the page layer's figures.</summary>
    public static string Header(TargetProcess target, RemoteSnapshot snapshot)
    {
        string time = snapshot.IntervalEnd.ToLocalTime().ToString("HH:mm:ss", CultureInfo.InvariantCulture);
        int caches = snapshot.Caches.Count;
        string pages = snapshot.PagesHeld is null
            ? "pages: not reported"
            : $"pages held {Bytes(snapshot.PagesHeld)}, cached {Bytes(snapshot.PagesCached)}, in use {Bytes(snapshot.PagesInUse)}";
        return $"kmem top: process {target} at {time}, {caches} cache{(caches == 1 ? "" : "s")}{Environment.NewLine}{pages}";
    }

    /// <summary>One refresh of `kmem top`: the header, the table (or why there is none), and the footer if any.</summary>
    public static IRenderable Render(TargetProcess target, RemoteSnapshot snapshot, TopSort sort, string? warning, string? footer)
    {
        var rows = new List<IRenderable> { new Text(Header(target, snapshot)) };
        if (warning is not null)
            rows.Add(new Markup($"[yellow]{Markup.Escape(warning)}[/]"));
        if (!snapshot.HasKmemMeter)
            rows.Add(new Text(NoMeter));
        else
            rows.Add(Table(snapshot, sort));
        if (footer is not null)
            rows.Add(new Markup($"[grey]{Markup.Escape(footer)}[/]"));
        return new Rows(rows);
    }

    /// <summary>The slabtop-like table.</summary>
    public static Table Table(RemoteSnapshot snapshot, TopSort sort)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (string column in new[] { "cache", "active objs", "total objs", "use", "slabs", "memory held", "cached objs" })
            table.AddColumn(new TableColumn(column).RightAligned());
        table.Columns[0].LeftAligned();
        foreach (RemoteCache c in Sorted(snapshot.Caches, sort))
        {
            table.AddRow(Markup.Escape(c.Name), $"{c.ActiveObjects:N0}", $"{c.TotalObjects:N0}", $"{c.PercentActive:F0}%",
                $"{c.Slabs:N0}", SlabInfoView.Bytes(c.BytesHeld), $"{c.CachedObjects:N0}");
        }
        return table;
    }

    /// <summary>
    /// `kmem slabinfo -p`: the columns of <see cref="SlabInfo.Format"/> the meter carries,
    /// laid out as it lays them out, caches by name.
    /// </summary>
    public static string SlabInfoText(TargetProcess target, RemoteSnapshot snapshot)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"# kmem slabinfo: process {target}, from its Kmem meter at {snapshot.IntervalEnd:yyyy-MM-dd HH:mm:ss}Z");
        if (!snapshot.HasKmemMeter)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"# {NoMeter}");
            return sb.ToString();
        }
        sb.AppendLine("# <objsize>, <objperslab>, <slabsize> and <aliases> are not in the meter: SlabInfo.Format() in the process prints them");
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"{"# name",-24} {"<active_objs>",13} {"<num_objs>",10} {"<num_slabs>",11} {"<bytes>",12} {"<cached>",8} {"<ctor>",10} {"<dtor>",10}");
        foreach (RemoteCache c in Sorted(snapshot.Caches, TopSort.Name))
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{c.Name,-24} {c.ActiveObjects,13} {c.TotalObjects,10} {c.Slabs,11} {c.BytesHeld,12} {c.CachedObjects,8} {c.ConstructorCalls,10} {c.DestructorCalls,10}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"# pages held from the OS: {Number(snapshot.PagesHeld)} bytes (large kmalloc: {Number(snapshot.LargeKmalloc)})");
        return sb.ToString();
    }

    private static string Bytes(long? bytes) => bytes is long b ? SlabInfoView.Bytes(b) : "?";

    private static string Number(long? value) => value?.ToString(CultureInfo.InvariantCulture) ?? "?";
}
