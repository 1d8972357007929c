//! The DAG of a workflow laid out by `layout-rs` (Sugiyama-style layering,
//! crossing reduction and edge routing), read back as plain geometry the
//! run page's template draws as SVG: no hand placement.

use layout::{
    core::{
        base::Orientation,
        format::{ClipHandle, RenderBackend},
        geometry::{Point, get_size_for_str, pad_shape_scalar},
        style::StyleAttr,
    },
    std_shapes::shapes::{Arrow, Element, ShapeKind},
    topo::layout::VisualGraph,
};
use serde::Serialize;

/// A node's box (SVG user units), keyed by step name.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DagNode {
    pub name: String,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// An edge as an SVG path (`d`), from a dependency to its dependent.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DagEdge {
    pub from: String,
    pub to: String,
    pub d: String,
}

/// The laid-out graph.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Dag {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<DagNode>,
    pub edges: Vec<DagEdge>,
}

/// Collects what the layout draws instead of writing an SVG of its own.
struct Collect {
    rects: Vec<(String, Point, Point)>,
    arrows: Vec<(String, String)>,
    max: Point,
}

impl Collect {
    fn grow(&mut self, p: Point) {
        self.max = Point::new(self.max.x.max(p.x), self.max.y.max(p.y));
    }
}

impl RenderBackend for Collect {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        _: &StyleAttr,
        props: Option<String>,
        _: Option<ClipHandle>,
    ) {
        self.grow(xy.add(size));
        if let Some(name) = props {
            self.rects.push((name, xy, size));
        }
    }
    fn draw_line(&mut self, _: Point, stop: Point, _: &StyleAttr, _: Option<String>) {
        self.grow(stop);
    }
    fn draw_circle(&mut self, xy: Point, size: Point, _: &StyleAttr, _: Option<String>) {
        self.grow(xy.add(size));
    }
    fn draw_text(&mut self, _: Point, _: &str, _: &StyleAttr) {}
    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _: bool,
        _: (bool, bool),
        _: &StyleAttr,
        props: Option<String>,
        _: &str,
    ) {
        for (a, b) in path {
            self.grow(*a);
            self.grow(*b);
        }
        let (Some(props), true) = (props, path.len() >= 2) else {
            return;
        };
        // The same cubic path the library's own SVG writer draws.
        let mut d = format!(
            "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
            path[0].0.x,
            path[0].0.y,
            path[0].1.x,
            path[0].1.y,
            path[1].0.x,
            path[1].0.y,
            path[1].1.x,
            path[1].1.y
        );
        for p in path.iter().skip(2) {
            d.push_str(&format!(
                " S {:.1} {:.1}, {:.1} {:.1}",
                p.0.x, p.0.y, p.1.x, p.1.y
            ));
        }
        self.arrows.push((props, d));
    }
    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}

/// Lays out `steps` (name and dependencies, definition order) top to
/// bottom, each node sized for the text `label` gives it (its name, or a
/// `for_each` step's counts beside it).
pub(crate) fn layout_labelled(
    steps: &[(String, Vec<String>)],
    label: impl Fn(&str) -> String,
) -> Dag {
    if steps.is_empty() {
        return Dag::default();
    }
    let mut graph = VisualGraph::new(Orientation::TopToBottom);
    let handles: Vec<_> = steps
        .iter()
        .map(|(name, _)| {
            let size = pad_shape_scalar(get_size_for_str(&label(name), 14), 14.0);
            let size = Point::new(size.x.max(90.0), size.y);
            let shape = ShapeKind::new_box(name);
            let elem = Element::create_with_properties(
                shape,
                StyleAttr::simple(),
                Orientation::LeftToRight,
                size,
                name.clone(),
            );
            graph.add_node(elem)
        })
        .collect();
    for (i, (name, deps)) in steps.iter().enumerate() {
        for dep in deps {
            if let Some(j) = steps.iter().position(|(n, _)| n == dep) {
                let arrow = Arrow::simple_with_properties("", format!("{dep}\u{0}{name}"));
                graph.add_edge(arrow, handles[j], handles[i]);
            }
        }
    }
    let mut out = Collect {
        rects: Vec::new(),
        arrows: Vec::new(),
        max: Point::zero(),
    };
    graph.do_it(false, false, false, &mut out);
    let nodes = out
        .rects
        .into_iter()
        .map(|(name, xy, size)| DagNode {
            name,
            x: xy.x,
            y: xy.y,
            w: size.x,
            h: size.y,
        })
        .collect();
    let edges = out
        .arrows
        .into_iter()
        .filter_map(|(props, d)| {
            let (from, to) = props.split_once('\u{0}')?;
            Some(DagEdge {
                from: from.to_owned(),
                to: to.to_owned(),
                d,
            })
        })
        .collect();
    Dag {
        width: out.max.x + 10.0,
        height: out.max.y + 10.0,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_step_is_a_node_and_every_dependency_an_edge_below_its_source() {
        let steps = vec![
            ("fetch".to_owned(), vec![]),
            ("left".to_owned(), vec!["fetch".to_owned()]),
            ("right".to_owned(), vec!["fetch".to_owned()]),
            (
                "join".to_owned(),
                vec!["left".to_owned(), "right".to_owned()],
            ),
        ];
        let dag = super::layout_labelled(&steps, str::to_owned);
        assert_eq!(dag.nodes.len(), 4, "{dag:?}");
        assert_eq!(dag.edges.len(), 4, "{dag:?}");
        let y = |n: &str| dag.nodes.iter().find(|d| d.name == n).unwrap().y;
        assert!(y("fetch") < y("left") && y("left") < y("join"), "{dag:?}");
        assert_eq!(y("left"), y("right"));
        let x = |n: &str| dag.nodes.iter().find(|d| d.name == n).unwrap().x;
        assert_ne!(x("left"), x("right"));
        assert!(dag.width > 0.0 && dag.height > 0.0);
    }
}
