//! Docker ids ⇄ Berth uuids. (Owned by the containers work.)
