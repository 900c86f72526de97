//! Path resolution in a merged tree: symlinks followed inside the image, as
//! the kernel follows them in a container's root.

use super::{Merged, Node};

/// The most symlinks one lookup follows, as Linux (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

impl Merged {
    /// What `path` (absolute) leads to with every symlink followed, as the
    /// kernel would inside the image (`..` stops at the root): the resolved
    /// path and its node; `None` when a component is missing, a non-directory
    /// has components after it, or more than [`MAX_SYMLINKS`] links are met.
    pub fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        const ROOT: &Node = &Node::Dir;
        // Components still to walk, the next one last.
        let mut pending: Vec<&str> = path.split('/').rev().collect();
        let mut at: Vec<&str> = Vec::new();
        let mut node = ROOT;
        let mut followed = 0;
        while let Some(part) = pending.pop() {
            if *node != Node::Dir {
                return None;
            }
            match part {
                "" | "." => continue,
                // The parent of a directory is a directory.
                ".." => {
                    at.pop();
                    continue;
                }
                part => at.push(part),
            }
            node = self.nodes.get(&at.join("/"))?;
            if let Node::Symlink { target } = node {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return None;
                }
                at.pop();
                if target.starts_with('/') {
                    at.clear();
                }
                pending.extend(target.split('/').rev());
                // The link's directory, where its target is looked up.
                node = ROOT;
            }
        }
        Some((format!("/{}", at.join("/")), node))
    }
}
