using Kmem.Cli;

namespace Kmem.Cli.Tests;

/// <summary>The order `kmem top --sort` gives the caches.</summary>
public class TopViewTests
{
    private static readonly RemoteCache[] s_caches =
    [
        new("b", ActiveObjects: 10, TotalObjects: 100, 0, 1, 0, BytesHeld: 8192, 0, 0),
        new("a", ActiveObjects: 50, TotalObjects: 50, 0, 1, 0, BytesHeld: 4096, 0, 0),
        new("c", ActiveObjects: 10, TotalObjects: 10, 0, 1, 0, BytesHeld: 8192, 0, 0),
    ];

    [Theory]
    [InlineData("memory", "bca")]   // most memory first; ties by name
    [InlineData("active", "abc")]
    [InlineData("total", "bac")]
    [InlineData("name", "abc")]
    public void Caches_sort_by_the_key_most_first_ties_by_name(string sort, string expected) =>
        Assert.Equal(expected, string.Concat(TopView.Sorted(s_caches, Enum.Parse<TopSort>(sort, ignoreCase: true)).Select(c => c.Name)));
}
